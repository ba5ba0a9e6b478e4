//! What GDB sees of the hart: the register numbering and the target description (GDB manual,
//! appendix G "Target Descriptions", G.5.10 "RISC-V Features"), and register values in the
//! target's byte order.

use understudy_cpu::{csr_numbers, Hart, Privilege};

/// Remote register numbers: x0..x31, pc, f0..f31, fflags, frm, fcsr, then `CSRS`, then the
/// privilege mode (`priv`, GDB's `org.gnu.gdb.riscv.virtual`). The `g` packet holds them in
/// this order up to fcsr; the rest are read one at a time with `p`.
pub const PC: u32 = 32;
pub const F0: u32 = 33;
pub const FFLAGS: u32 = 65;
pub const FRM: u32 = 66;
pub const FCSR: u32 = 67;
pub const FIRST_CSR: u32 = 68;
pub const PRIV: u32 = FIRST_CSR + CSRS.len() as u32;
/// The last register of the `g` packet.
pub const LAST_IN_G_PACKET: u32 = FCSR;

/// Integer register names (unprivileged spec chapter 25, "RISC-V Assembly Programmer's
/// Handbook"), as GDB's `org.gnu.gdb.riscv.cpu` spells them.
const X_NAMES: [&str; 32] = [
    "zero", "ra", "sp", "gp", "tp", "t0", "t1", "t2", "fp", "s1", "a0", "a1", "a2", "a3", "a4",
    "a5", "a6", "a7", "s2", "s3", "s4", "s5", "s6", "s7", "s8", "s9", "s10", "s11", "t3", "t4",
    "t5", "t6",
];
const F_NAMES: [&str; 32] = [
    "ft0", "ft1", "ft2", "ft3", "ft4", "ft5", "ft6", "ft7", "fs0", "fs1", "fa0", "fa1", "fa2",
    "fa3", "fa4", "fa5", "fa6", "fa7", "fs2", "fs3", "fs4", "fs5", "fs6", "fs7", "fs8", "fs9",
    "fs10", "fs11", "ft8", "ft9", "ft10", "ft11",
];

/// The CSRs shown to GDB (`info registers sepc`), by their privileged-spec names.
pub const CSRS: [(&str, u16); 22] = [
    ("sstatus", csr_numbers::SSTATUS),
    ("sie", csr_numbers::SIE),
    ("stvec", csr_numbers::STVEC),
    ("sscratch", csr_numbers::SSCRATCH),
    ("sepc", csr_numbers::SEPC),
    ("scause", csr_numbers::SCAUSE),
    ("stval", csr_numbers::STVAL),
    ("sip", csr_numbers::SIP),
    ("satp", csr_numbers::SATP),
    ("mstatus", csr_numbers::MSTATUS),
    ("misa", csr_numbers::MISA),
    ("medeleg", csr_numbers::MEDELEG),
    ("mideleg", csr_numbers::MIDELEG),
    ("mie", csr_numbers::MIE),
    ("mtvec", csr_numbers::MTVEC),
    ("mscratch", csr_numbers::MSCRATCH),
    ("mepc", csr_numbers::MEPC),
    ("mcause", csr_numbers::MCAUSE),
    ("mtval", csr_numbers::MTVAL),
    ("mip", csr_numbers::MIP),
    ("cycle", csr_numbers::CYCLE),
    ("instret", csr_numbers::INSTRET),
];

/// The target description GDB reads with `qXfer:features:read:target.xml`.
pub fn target_xml() -> String {
    let mut xml = String::from(
        "<?xml version=\"1.0\"?>\n<!DOCTYPE target SYSTEM \"gdb-target.dtd\">\n<target version=\"1.0\">\n<architecture>riscv:rv64</architecture>\n",
    );
    xml.push_str("<feature name=\"org.gnu.gdb.riscv.cpu\">\n");
    for (number, name) in X_NAMES.iter().enumerate() {
        let kind = match *name {
            "ra" => "code_ptr",
            "sp" | "gp" | "tp" | "fp" => "data_ptr",
            _ => "int",
        };
        xml.push_str(&format!(
            "<reg name=\"{name}\" bitsize=\"64\" type=\"{kind}\" regnum=\"{number}\"/>\n"
        ));
    }
    xml.push_str(&format!(
        "<reg name=\"pc\" bitsize=\"64\" type=\"code_ptr\" regnum=\"{PC}\"/>\n</feature>\n"
    ));
    xml.push_str("<feature name=\"org.gnu.gdb.riscv.fpu\">\n<union id=\"riscv_double\"><field name=\"float\" type=\"ieee_single\"/><field name=\"double\" type=\"ieee_double\"/></union>\n");
    for (index, name) in F_NAMES.iter().enumerate() {
        xml.push_str(&format!(
            "<reg name=\"{name}\" bitsize=\"64\" type=\"riscv_double\" regnum=\"{}\"/>\n",
            F0 + index as u32
        ));
    }
    for (name, number) in [("fflags", FFLAGS), ("frm", FRM), ("fcsr", FCSR)] {
        xml.push_str(&format!(
            "<reg name=\"{name}\" bitsize=\"32\" type=\"int\" regnum=\"{number}\"/>\n"
        ));
    }
    xml.push_str("</feature>\n<feature name=\"org.gnu.gdb.riscv.csr\">\n");
    for (index, (name, _)) in CSRS.iter().enumerate() {
        xml.push_str(&format!(
            "<reg name=\"{name}\" bitsize=\"64\" type=\"int\" regnum=\"{}\"/>\n",
            FIRST_CSR + index as u32
        ));
    }
    xml.push_str(&format!(
        "</feature>\n<feature name=\"org.gnu.gdb.riscv.virtual\">\n<reg name=\"priv\" bitsize=\"64\" type=\"int\" regnum=\"{PRIV}\"/>\n</feature>\n</target>\n"
    ));
    xml
}

/// Register `number`'s value in little-endian bytes of its size, or `None` if there is no
/// such register.
pub fn register(hart: &Hart, number: u32) -> Option<Vec<u8>> {
    let word = |value: u64| value.to_le_bytes().to_vec();
    let half = |value: u64| (value as u32).to_le_bytes().to_vec();
    Some(match number {
        0..=31 => word(hart.x(number as usize)),
        PC => word(hart.pc()),
        F0..=64 => word(hart.f((number - F0) as usize)),
        FFLAGS => half(hart.read_csr(csr_numbers::FFLAGS)?),
        FRM => half(hart.read_csr(csr_numbers::FRM)?),
        FCSR => half(hart.read_csr(csr_numbers::FCSR)?),
        PRIV => word(match hart.privilege() {
            Privilege::User => 0,
            Privilege::Supervisor => 1,
            Privilege::Machine => 3,
        }),
        _ => {
            let (_, csr) = CSRS.get(number.checked_sub(FIRST_CSR)? as usize)?;
            word(hart.read_csr(*csr)?)
        }
    })
}

/// All registers of the `g` packet, concatenated.
pub fn g_packet_registers(hart: &Hart) -> Vec<u8> {
    (0..=LAST_IN_G_PACKET)
        .flat_map(|number| register(hart, number).expect("every g-packet register exists"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use understudy_cpu::{GuestPhysAddr, HartConfig};

    fn hart() -> Hart {
        let mut hart = Hart::new(HartConfig {
            ram_base: GuestPhysAddr(0x8000_0000),
            ram_size_bytes: 1 << 20,
            host_monitor: true,
        });
        hart.reset(0x8020_0000, Privilege::Supervisor, 0x11, 0x22);
        hart
    }

    #[test]
    fn the_g_packet_holds_x0_to_x31_pc_the_fp_registers_and_fcsr_in_that_order() {
        let hart = hart();
        let bytes = g_packet_registers(&hart);
        assert_eq!(bytes.len(), 33 * 8 + 32 * 8 + 3 * 4);
        // a0 = x10, a1 = x11, then pc.
        assert_eq!(bytes[10 * 8..11 * 8], 0x11u64.to_le_bytes());
        assert_eq!(bytes[11 * 8..12 * 8], 0x22u64.to_le_bytes());
        assert_eq!(bytes[32 * 8..33 * 8], 0x8020_0000u64.to_le_bytes());
    }

    #[test]
    fn single_registers_cover_csrs_and_the_privilege_and_nothing_past_them() {
        let hart = hart();
        assert_eq!(register(&hart, PRIV), Some(1u64.to_le_bytes().to_vec()));
        let satp = FIRST_CSR + CSRS.iter().position(|(n, _)| *n == "satp").unwrap() as u32;
        assert_eq!(register(&hart, satp), Some(0u64.to_le_bytes().to_vec()));
        assert_eq!(register(&hart, PRIV + 1), None);
        assert_eq!(register(&hart, FCSR).map(|v| v.len()), Some(4));
    }

    #[test]
    fn the_target_description_numbers_every_register_it_names_once() {
        let xml = target_xml();
        let numbers: Vec<u32> = xml
            .split("regnum=\"")
            .skip(1)
            .map(|rest| rest.split('"').next().unwrap().parse().unwrap())
            .collect();
        assert_eq!(numbers, (0..=PRIV).collect::<Vec<_>>());
        assert!(xml.contains("<feature name=\"org.gnu.gdb.riscv.cpu\">"));
        assert!(
            !xml.contains(['$', '#', '*', '}']),
            "no byte needs escaping"
        );
    }
}
