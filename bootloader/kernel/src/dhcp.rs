//! DHCPv4 client (RFC 2131) on an appliance NIC, through smoltcp's DHCP socket.

use crate::net::NetDevice;
use crate::tsc;
use alloc::vec;
use core::fmt;
use smoltcp::iface::{Interface, SocketSet};
use smoltcp::socket::dhcpv4;
use smoltcp::time::Instant;
use smoltcp::wire::{IpCidr, Ipv4Address, Ipv4Cidr};

/// An address lease the interface was configured with.
#[derive(Clone, Copy, Debug)]
pub struct Lease {
    pub address: Ipv4Cidr,
    pub router: Option<Ipv4Address>,
    pub server: Ipv4Address,
}

#[derive(Debug)]
pub enum DhcpError {
    /// No server answered within the timeout.
    NoAnswer { waited_ms: u64 },
}

impl fmt::Display for DhcpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoAnswer { waited_ms } => {
                write!(f, "no dhcp server answered in {waited_ms} ms: check the cable or use a static address")
            }
        }
    }
}

fn now() -> Instant {
    Instant::from_micros(tsc::now().0 as i64)
}

/// Runs DHCP discovery until a lease arrives, then puts its address and default route on
/// `iface` (replacing any static address).
pub fn acquire_lease(
    iface: &mut Interface,
    device: &mut NetDevice,
    timeout_ms: u64,
) -> Result<Lease, DhcpError> {
    let mut sockets = SocketSet::new(vec![]);
    let handle = sockets.add(dhcpv4::Socket::new());
    let started = now();
    loop {
        iface.poll(now(), device, &mut sockets);
        if let Some(dhcpv4::Event::Configured(config)) =
            sockets.get_mut::<dhcpv4::Socket>(handle).poll()
        {
            let lease = Lease {
                address: config.address,
                router: config.router,
                server: config.server.address,
            };
            iface.update_ip_addrs(|addresses| {
                addresses.clear();
                addresses
                    .push(IpCidr::Ipv4(lease.address))
                    .expect("an empty address list has room for one");
            });
            iface.routes_mut().remove_default_ipv4_route();
            if let Some(router) = lease.router {
                // Only fails when the route table is full, and it was just emptied.
                let _ = iface.routes_mut().add_default_ipv4_route(router);
            }
            return Ok(lease);
        }
        let waited_ms = (now() - started).total_millis();
        if waited_ms > timeout_ms {
            return Err(DhcpError::NoAnswer { waited_ms });
        }
    }
}
