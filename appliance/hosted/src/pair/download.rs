//! A slow HTTP download that holds one connection open across a fault: half of the guest's
//! `/numbers.txt` (the numbers 1 to N, one per line, written by `guest/init`; N is 300000
//! unless `understudy.numbers` says otherwise) before the fault, the rest after it, checked byte
//! for byte.
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};

/// The page's last number when the guest's command line does not choose one.
pub const NUMBERS_DEFAULT: u32 = 300_000;
/// Body bytes read before the fault, at most (and at most half the page).
const FIRST_PART_BYTES_MAX: usize = 512 * 1024;
/// How long a read may wait for the guest (the failover happens during one).
const READ_TIMEOUT: Duration = Duration::from_secs(60);

/// A download in progress.
pub struct SlowDownload {
    resume: Arc<AtomicBool>,
    thread: JoinHandle<Result<usize>>,
}

/// The page's exact contents.
fn expected(numbers: u32) -> Vec<u8> {
    (1..=numbers)
        .flat_map(|n| format!("{n}\n").into_bytes())
        .collect()
}

impl SlowDownload {
    /// Connects, asks for the page and returns once the first part has arrived; the rest is
    /// read after `finish` is called.
    pub fn start(address: SocketAddr, numbers: u32) -> Result<SlowDownload> {
        let resume = Arc::new(AtomicBool::new(false));
        let (started, first_part) = mpsc::channel();
        let thread = {
            let resume = resume.clone();
            std::thread::spawn(move || download(address, numbers, &resume, started))
        };
        match first_part.recv_timeout(READ_TIMEOUT) {
            Ok(()) => Ok(SlowDownload { resume, thread }),
            Err(_) => match thread.join() {
                Ok(Err(error)) => Err(error.context("the download did not start")),
                _ => bail!(
                    "the download did not start within {} s",
                    READ_TIMEOUT.as_secs()
                ),
            },
        }
    }

    /// Reads the rest over the same connection; the body's length when it was intact.
    pub fn finish(self) -> Result<usize> {
        self.resume.store(true, Ordering::SeqCst);
        match self.thread.join() {
            Ok(result) => result,
            Err(_) => bail!("the download thread panicked"),
        }
    }
}

fn download(
    address: SocketAddr,
    numbers: u32,
    resume: &AtomicBool,
    started: mpsc::Sender<()>,
) -> Result<usize> {
    let expected = expected(numbers);
    let first_part_bytes = FIRST_PART_BYTES_MAX.min(expected.len() / 2);
    let mut stream = TcpStream::connect_timeout(&address, READ_TIMEOUT)
        .context("cannot connect to the guest's httpd")?;
    stream.set_read_timeout(Some(READ_TIMEOUT))?;
    stream.write_all(b"GET /numbers.txt HTTP/1.0\r\nHost: guest\r\n\r\n")?;
    let mut received = Vec::new();
    let mut buffer = [0u8; 16 * 1024];
    let mut signalled = false;
    loop {
        let header_end = received.windows(4).position(|w| w == b"\r\n\r\n");
        let body = header_end.map_or(0, |end| received.len() - end - 4);
        if !signalled && body >= first_part_bytes {
            signalled = true;
            let _ = started.send(());
            // The connection stays open, unread, until the fault has happened.
            while !resume.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let read = stream
            .read(&mut buffer)
            .with_context(|| format!("the download broke after {} bytes", received.len()))?;
        if read == 0 {
            break;
        }
        received.extend_from_slice(&buffer[..read]);
    }
    let end = received
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .context("the answer has no HTTP header")?;
    ensure!(
        received.starts_with(b"HTTP/1.") && received[..end].windows(6).any(|w| w == b"200 OK"),
        "httpd answered {:?}",
        String::from_utf8_lossy(&received[..end.min(60)])
    );
    let body = &received[end + 4..];
    ensure!(
        body == expected,
        "the page arrived with {} bytes, {} expected; first difference at byte {}",
        body.len(),
        expected.len(),
        body.iter()
            .zip(&expected)
            .position(|(a, b)| a != b)
            .unwrap_or(body.len().min(expected.len()))
    );
    Ok(body.len())
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_expected_page_is_the_numbers_one_per_line() {
        let page = super::expected(super::NUMBERS_DEFAULT);
        assert_eq!(page.len(), 1_988_895);
        assert!(page.starts_with(b"1\n2\n3\n"));
        assert!(page.ends_with(b"299999\n300000\n"));
        // The appliance drill's smaller page.
        assert_eq!(super::expected(20_000).len(), 108_894);
    }
}
