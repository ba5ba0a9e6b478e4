//! A flattened device tree writer (Devicetree Specification v0.4, chapter 5).

use alloc::string::String;
use alloc::vec::Vec;

const FDT_MAGIC: u32 = 0xd00d_feed;
const FDT_BEGIN_NODE: u32 = 0x1;
const FDT_END_NODE: u32 = 0x2;
const FDT_PROP: u32 = 0x3;
const FDT_END: u32 = 0x9;
/// Spec 5.1: version 17, last compatible version 16.
const FDT_VERSION: u32 = 17;
const FDT_LAST_COMPATIBLE_VERSION: u32 = 16;
const HEADER_BYTES: usize = 40;
/// One empty memory-reservation entry (address 0, size 0) terminates the block (spec 5.3).
const RESERVATION_BLOCK_BYTES: usize = 16;

/// Builds a device tree blob node by node, in the order the nodes are opened.
#[derive(Default)]
pub struct FdtWriter {
    structure: Vec<u8>,
    strings: Vec<u8>,
    /// Offsets of property names already in `strings`, so each name is stored once.
    string_offsets: Vec<(String, u32)>,
    depth: usize,
}

impl FdtWriter {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn begin_node(&mut self, name: &str) {
        self.token(FDT_BEGIN_NODE);
        self.structure.extend_from_slice(name.as_bytes());
        self.structure.push(0);
        self.pad();
        self.depth += 1;
    }

    pub fn end_node(&mut self) {
        assert!(self.depth > 0, "fdt: end_node without begin_node");
        self.token(FDT_END_NODE);
        self.depth -= 1;
    }

    pub fn property(&mut self, name: &str, value: &[u8]) {
        let name_offset = self.string_offset(name);
        self.token(FDT_PROP);
        self.structure
            .extend_from_slice(&(value.len() as u32).to_be_bytes());
        self.structure.extend_from_slice(&name_offset.to_be_bytes());
        self.structure.extend_from_slice(value);
        self.pad();
    }

    pub fn property_empty(&mut self, name: &str) {
        self.property(name, &[]);
    }

    pub fn property_u32(&mut self, name: &str, value: u32) {
        self.property(name, &value.to_be_bytes());
    }

    pub fn property_u64(&mut self, name: &str, value: u64) {
        self.property(name, &value.to_be_bytes());
    }

    pub fn property_cells(&mut self, name: &str, cells: &[u32]) {
        let bytes: Vec<u8> = cells.iter().flat_map(|c| c.to_be_bytes()).collect();
        self.property(name, &bytes);
    }

    pub fn property_string(&mut self, name: &str, value: &str) {
        self.property_strings(name, &[value]);
    }

    /// A string list: each string NUL-terminated, concatenated (spec 2.2.4.1).
    pub fn property_strings(&mut self, name: &str, values: &[&str]) {
        let mut bytes = Vec::new();
        for value in values {
            bytes.extend_from_slice(value.as_bytes());
            bytes.push(0);
        }
        self.property(name, &bytes);
    }

    /// Closes the tree and returns the blob.
    pub fn finish(mut self) -> Vec<u8> {
        assert!(self.depth == 0, "fdt: unbalanced nodes");
        self.token(FDT_END);
        let structure_offset = HEADER_BYTES + RESERVATION_BLOCK_BYTES;
        let strings_offset = structure_offset + self.structure.len();
        let total = strings_offset + self.strings.len();
        let header = [
            FDT_MAGIC,
            total as u32,
            structure_offset as u32,
            strings_offset as u32,
            HEADER_BYTES as u32,
            FDT_VERSION,
            FDT_LAST_COMPATIBLE_VERSION,
            0, // boot_cpuid_phys
            self.strings.len() as u32,
            self.structure.len() as u32,
        ];
        let mut blob = Vec::with_capacity(total);
        for word in header {
            blob.extend_from_slice(&word.to_be_bytes());
        }
        blob.extend_from_slice(&[0; RESERVATION_BLOCK_BYTES]);
        blob.extend_from_slice(&self.structure);
        blob.extend_from_slice(&self.strings);
        blob
    }

    fn token(&mut self, token: u32) {
        self.structure.extend_from_slice(&token.to_be_bytes());
    }

    fn pad(&mut self) {
        while !self.structure.len().is_multiple_of(4) {
            self.structure.push(0);
        }
    }

    fn string_offset(&mut self, name: &str) -> u32 {
        if let Some((_, offset)) = self.string_offsets.iter().find(|(n, _)| n == name) {
            return *offset;
        }
        let offset = self.strings.len() as u32;
        self.strings.extend_from_slice(name.as_bytes());
        self.strings.push(0);
        self.string_offsets.push((String::from(name), offset));
        offset
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn be32(blob: &[u8], offset: usize) -> u32 {
        u32::from_be_bytes(blob[offset..offset + 4].try_into().unwrap())
    }

    #[test]
    fn header_fields_describe_the_blocks_spec_5_2() {
        let mut fdt = FdtWriter::new();
        fdt.begin_node("");
        fdt.property_u32("#address-cells", 2);
        fdt.property_u32("#size-cells", 2);
        fdt.end_node();
        let blob = fdt.finish();
        assert_eq!(be32(&blob, 0), FDT_MAGIC);
        assert_eq!(be32(&blob, 4) as usize, blob.len());
        let structure = be32(&blob, 8) as usize;
        let strings = be32(&blob, 12) as usize;
        assert_eq!(be32(&blob, 36) as usize, strings - structure);
        assert_eq!(be32(&blob, 32) as usize, blob.len() - strings);
        // Root node with an empty name, then the first property.
        assert_eq!(be32(&blob, structure), FDT_BEGIN_NODE);
        assert_eq!(be32(&blob, structure + 8), FDT_PROP);
        // Two properties, two names in the strings block, each stored once.
        assert_eq!(&blob[strings..], b"#address-cells\0#size-cells\0");
        assert_eq!(
            be32(&blob, blob.len() - (blob.len() - strings) - 4),
            FDT_END
        );
    }

    #[test]
    fn repeated_property_names_share_one_string() {
        let mut fdt = FdtWriter::new();
        fdt.begin_node("");
        fdt.begin_node("a");
        fdt.property_string("compatible", "x");
        fdt.end_node();
        fdt.begin_node("b");
        fdt.property_string("compatible", "y");
        fdt.end_node();
        fdt.end_node();
        let blob = fdt.finish();
        let strings = be32(&blob, 12) as usize;
        assert_eq!(&blob[strings..], b"compatible\0");
    }
}
