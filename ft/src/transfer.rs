//! The state transfer of a join: the messages between a joining replica and the live primary,
//! and the tree of SHA-256 digests over disk ranges that both sides build to find what differs.
//!
//! A join runs in three phases, all inside one session the live side numbers (PROTOCOL.md,
//! "Re-protection"):
//!
//! 1. **Disk** (separate disks only): the live side hashes its disk into a [`DiskTree`] and
//!    announces the root in [`Transfer::Start`]. The joiner, which hashed its own disk the
//!    same way, compares top-down: it asks for the digests of the children of every node that
//!    differs ([`Transfer::DiskQuery`]) and fetches the leaves that differ
//!    ([`Transfer::DiskFetch`]). An unchanged disk costs one comparison; a changed one moves
//!    only the differing ranges. The live side tracks the guest's writes from before it
//!    started hashing, so whatever changed since is sent again in phase 2.
//! 2. **Pre-copy**: numbered [`Piece`]s, acknowledged cumulatively: every RAM page in round
//!    0, then the pages and disk ranges written during the previous round, until a round is
//!    small. The guest keeps running throughout.
//! 3. **Pause**: the guest stops for the last dirty pages and disk ranges and the machine's
//!    device and hart state; the node starts keeping the log at that point. Once every piece
//!    is acknowledged the live side sends the node's `Snapshot` with a [`Completion`]; the
//!    joiner restores, checks the state digest named there and only then becomes the backup.
//!
//! Everything here is bytes in, bytes out; the replica runtime reads and writes the machine
//! and the disk.
use alloc::vec::Vec;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Children per inner node of a [`DiskTree`].
pub const DISK_TREE_FANOUT: usize = 16;

/// The number of one join attempt, chosen by the live side; messages of another session are
/// ignored, so a cut join that starts again cannot mix pieces of two attempts.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct SessionId(pub u64);

/// A node of a [`DiskTree`]: `level` 0 holds the leaves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct TreeNode {
    /// 0 for leaves, growing toward the root.
    pub level: u8,
    /// Index within the level.
    pub index: u32,
}

/// The body of a `Message::Transfer`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Transfer {
    /// Live to joiner: a session begins. Repeated until the joiner answers.
    Start {
        /// This attempt.
        session: SessionId,
        /// The live machine's RAM size in 4 KiB pages (the joiner's must be the same).
        ram_pages: u32,
        /// The disk, when the replicas keep separate disks.
        disk: Option<DiskSummary>,
    },
    /// Joiner to live: the digests of these tree nodes, please.
    DiskQuery {
        /// The session.
        session: SessionId,
        /// The nodes.
        nodes: Vec<TreeNode>,
    },
    /// Live to joiner: the digests asked for.
    DiskDigests {
        /// The session.
        session: SessionId,
        /// Each node with its digest.
        digests: Vec<(TreeNode, [u8; 32])>,
    },
    /// Joiner to live: the bytes of these leaves, please.
    DiskFetch {
        /// The session.
        session: SessionId,
        /// Leaf indices.
        leaves: Vec<u32>,
    },
    /// Live to joiner: bytes of one leaf as the live disk holds them now, from
    /// `offset_bytes` within the leaf (a leaf may travel in several messages when the
    /// channel's datagrams are smaller than a leaf).
    DiskLeaf {
        /// The session.
        session: SessionId,
        /// Leaf index.
        leaf: u32,
        /// Where `bytes` start within the leaf.
        offset_bytes: u32,
        /// The bytes.
        bytes: Vec<u8>,
    },
    /// Joiner to live: its disk now matches the tree announced in `Start`; begin pre-copy.
    DiskMatched {
        /// The session.
        session: SessionId,
    },
    /// Live to joiner: a numbered piece of state.
    Piece {
        /// The session.
        session: SessionId,
        /// 1, 2, 3, ... in sending order; the joiner takes them only in order.
        sequence: u32,
        /// The content.
        piece: Piece,
    },
    /// Joiner to live: every piece through `through` is applied.
    PieceAck {
        /// The session.
        session: SessionId,
        /// The highest piece sequence applied (0: none).
        through: u32,
        /// A later piece arrived while `through + 1` had not: it was lost (or overtaken),
        /// so the live side sends again from there without waiting for a timeout.
        gap: bool,
    },
}

impl Transfer {
    /// The session a message belongs to.
    pub fn session(&self) -> SessionId {
        match self {
            Transfer::Start { session, .. }
            | Transfer::DiskQuery { session, .. }
            | Transfer::DiskDigests { session, .. }
            | Transfer::DiskFetch { session, .. }
            | Transfer::DiskLeaf { session, .. }
            | Transfer::DiskMatched { session }
            | Transfer::Piece { session, .. }
            | Transfer::PieceAck { session, .. } => *session,
        }
    }

    /// True for the messages a live primary sends (the rest come from a joiner).
    pub fn from_live(&self) -> bool {
        matches!(
            self,
            Transfer::Start { .. }
                | Transfer::DiskDigests { .. }
                | Transfer::DiskLeaf { .. }
                | Transfer::Piece { .. }
        )
    }
}

/// The live disk as `Start` announces it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskSummary {
    /// Its size in bytes (the joiner's must be the same).
    pub len_bytes: u64,
    /// Bytes per leaf range.
    pub leaf_bytes: u32,
    /// The tree's root digest.
    pub root: [u8; 32],
}

/// One RAM page in a `Piece::Ram`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PageData {
    /// All zeroes (most of a fresh guest's memory): sent as one byte.
    Zero,
    /// The page's 4096 bytes.
    Bytes(Vec<u8>),
}

/// A numbered piece of machine state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Piece {
    /// Consecutive RAM pages from `first_page` (4 KiB pages from the RAM base).
    Ram {
        /// The first page's number.
        first_page: u32,
        /// The pages.
        pages: Vec<PageData>,
    },
    /// Part of one RAM page, for channels whose datagrams are smaller than a page; a page's
    /// parts travel in consecutive pieces, in order.
    RamPart {
        /// The page's number.
        page: u32,
        /// Where `bytes` start within the page.
        offset_bytes: u32,
        /// The bytes.
        bytes: Vec<u8>,
    },
    /// Disk bytes the guest wrote since the disk was compared.
    Disk {
        /// Byte offset.
        offset_bytes: u64,
        /// The bytes.
        bytes: Vec<u8>,
    },
    /// Part of the machine's device and hart state (`Machine::save_devices`), which may be
    /// larger than one frame.
    Devices {
        /// Offset of `bytes` in the whole.
        offset_bytes: u32,
        /// Size of the whole.
        total_bytes: u32,
        /// This part.
        bytes: Vec<u8>,
    },
}

/// What the node's `Snapshot` carries as its state when the pieces came first: which session
/// it closes, how many pieces make the state, and the state digest the joiner must reach.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Completion {
    /// The session.
    pub session: SessionId,
    /// The last piece of the state.
    pub pieces: u32,
    /// The machine's state digest at the handover's instruction count.
    pub digest: [u8; 32],
    /// The root of the live disk's tree at the handover (separate disks only): the joiner's
    /// disk must have the same.
    pub disk_root: Option<[u8; 32]>,
}

impl Completion {
    /// Encodes for `Node::send_snapshot`.
    pub fn encode(&self) -> Vec<u8> {
        postcard::to_allocvec(self).expect("a completion always encodes")
    }

    /// Decodes a snapshot's state; `None` for anything else.
    pub fn decode(bytes: &[u8]) -> Option<Completion> {
        match postcard::take_from_bytes::<Completion>(bytes) {
            Ok((completion, [])) => Some(completion),
            _ => None,
        }
    }
}

/// SHA-256 digests over the fixed-size ranges of a disk, and over groups of
/// [`DISK_TREE_FANOUT`] of them, up to one root. Both sides build it the same way from the
/// same size and leaf size, so equal disks have equal roots and the first differing node on
/// every path leads to a differing leaf.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiskTree {
    len_bytes: u64,
    leaf_bytes: u32,
    /// `levels[0]` the leaves, the last level the root alone.
    levels: Vec<Vec<[u8; 32]>>,
}

impl DiskTree {
    /// The number of leaves of a disk of `len_bytes` in ranges of `leaf_bytes`.
    pub fn leaf_count(len_bytes: u64, leaf_bytes: u32) -> u32 {
        let leaves = len_bytes.div_ceil(u64::from(leaf_bytes.max(1))).max(1);
        u32::try_from(leaves).expect("a disk of at most 2^32 ranges")
    }

    /// The byte range of leaf `leaf`.
    pub fn leaf_range(len_bytes: u64, leaf_bytes: u32, leaf: u32) -> (u64, usize) {
        let start = u64::from(leaf) * u64::from(leaf_bytes);
        let end = (start + u64::from(leaf_bytes)).min(len_bytes);
        (start, end.saturating_sub(start) as usize)
    }

    /// The digest of one leaf's bytes.
    pub fn leaf_digest(bytes: &[u8]) -> [u8; 32] {
        Sha256::digest(bytes).into()
    }

    /// A tree over leaf digests already computed, in leaf order.
    pub fn from_leaves(len_bytes: u64, leaf_bytes: u32, leaves: Vec<[u8; 32]>) -> DiskTree {
        assert_eq!(
            leaves.len(),
            DiskTree::leaf_count(len_bytes, leaf_bytes) as usize,
            "one digest per leaf"
        );
        let mut levels = alloc::vec![leaves];
        while levels.last().is_some_and(|level| level.len() > 1) {
            let below = levels.last().expect("a level");
            let above = below
                .chunks(DISK_TREE_FANOUT)
                .map(|children| {
                    let mut hasher = Sha256::new();
                    for child in children {
                        hasher.update(child);
                    }
                    hasher.finalize().into()
                })
                .collect();
            levels.push(above);
        }
        DiskTree {
            len_bytes,
            leaf_bytes,
            levels,
        }
    }

    /// The disk size.
    pub fn len_bytes(&self) -> u64 {
        self.len_bytes
    }

    /// Bytes per leaf.
    pub fn leaf_bytes(&self) -> u32 {
        self.leaf_bytes
    }

    /// The root node.
    pub fn root_node(&self) -> TreeNode {
        TreeNode {
            level: (self.levels.len() - 1) as u8,
            index: 0,
        }
    }

    /// The root digest.
    pub fn root(&self) -> [u8; 32] {
        self.levels.last().expect("a tree has a root")[0]
    }

    /// A node's digest; `None` for a node the tree does not have.
    pub fn digest(&self, node: TreeNode) -> Option<[u8; 32]> {
        self.levels
            .get(usize::from(node.level))?
            .get(node.index as usize)
            .copied()
    }

    /// A node's children (empty for a leaf or a node the tree does not have).
    pub fn children(&self, node: TreeNode) -> Vec<TreeNode> {
        if node.level == 0 || self.digest(node).is_none() {
            return Vec::new();
        }
        let below = self.levels[usize::from(node.level) - 1].len() as u32;
        let first = node.index * DISK_TREE_FANOUT as u32;
        (first..(first + DISK_TREE_FANOUT as u32).min(below))
            .map(|index| TreeNode {
                level: node.level - 1,
                index,
            })
            .collect()
    }

    /// Replaces a leaf's digest and updates its ancestors (the joiner, after writing a leaf
    /// it fetched).
    pub fn set_leaf(&mut self, leaf: u32, digest: [u8; 32]) {
        let Some(slot) = self.levels[0].get_mut(leaf as usize) else {
            return;
        };
        *slot = digest;
        let mut index = leaf as usize;
        for level in 1..self.levels.len() {
            index /= DISK_TREE_FANOUT;
            let first = index * DISK_TREE_FANOUT;
            let below = &self.levels[level - 1];
            let mut hasher = Sha256::new();
            for child in &below[first..(first + DISK_TREE_FANOUT).min(below.len())] {
                hasher.update(child);
            }
            self.levels[level][index] = hasher.finalize().into();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    fn tree_of(disk: &[u8], leaf_bytes: u32) -> DiskTree {
        let count = DiskTree::leaf_count(disk.len() as u64, leaf_bytes);
        let leaves = (0..count)
            .map(|leaf| {
                let (start, len) = DiskTree::leaf_range(disk.len() as u64, leaf_bytes, leaf);
                DiskTree::leaf_digest(&disk[start as usize..start as usize + len])
            })
            .collect();
        DiskTree::from_leaves(disk.len() as u64, leaf_bytes, leaves)
    }

    /// What a joiner does: descend from the root into differing nodes only. Returns the
    /// differing leaves and how many digests were compared.
    fn differing_leaves(live: &DiskTree, joiner: &DiskTree) -> (Vec<u32>, usize) {
        let mut compared = 0;
        let mut frontier = vec![live.root_node()];
        let mut leaves = Vec::new();
        while let Some(node) = frontier.pop() {
            compared += 1;
            if live.digest(node) == joiner.digest(node) {
                continue;
            }
            if node.level == 0 {
                leaves.push(node.index);
            } else {
                frontier.extend(live.children(node));
            }
        }
        leaves.sort_unstable();
        (leaves, compared)
    }

    #[test]
    fn equal_disks_cost_one_comparison() {
        let disk: Vec<u8> = (0..100_000u32).map(|i| (i * 7) as u8).collect();
        let (leaves, compared) = differing_leaves(&tree_of(&disk, 512), &tree_of(&disk, 512));
        assert_eq!((leaves, compared), (vec![], 1));
    }

    #[test]
    fn changed_ranges_are_found_exactly_and_only_along_their_paths() {
        let disk: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
        let mut other = disk.clone();
        // Leaves 3, 700 and the short last one (1_000_000 / 512 = 1953.1).
        other[3 * 512 + 5] ^= 1;
        other[700 * 512] ^= 0x80;
        other[999_999] ^= 2;
        let live = tree_of(&disk, 512);
        let (leaves, compared) = differing_leaves(&live, &tree_of(&other, 512));
        assert_eq!(leaves, vec![3, 700, 1953]);
        // 1954 leaves: levels of 1954, 123, 8, 1. Root, its 8 children, the 16 children of
        // each of the (at most 3) differing level-2 nodes, the 16 children of each
        // differing level-1 node.
        assert!(compared <= 1 + 8 + 3 * 16 + 3 * 16, "compared {compared}");
        assert_eq!(
            live.levels.iter().map(Vec::len).collect::<Vec<_>>(),
            vec![1954, 123, 8, 1]
        );
    }

    #[test]
    fn set_leaf_brings_the_joiners_tree_to_the_live_root() {
        let disk: Vec<u8> = (0..70_000u32).map(|i| (i % 13) as u8).collect();
        let mut other = vec![0u8; disk.len()];
        let live = tree_of(&disk, 4096);
        let mut joiner = tree_of(&other, 4096);
        let (leaves, _) = differing_leaves(&live, &joiner);
        assert_eq!(leaves.len(), 18);
        for leaf in leaves {
            let (start, len) = DiskTree::leaf_range(disk.len() as u64, 4096, leaf);
            let range = start as usize..start as usize + len;
            other[range.clone()].copy_from_slice(&disk[range.clone()]);
            joiner.set_leaf(leaf, DiskTree::leaf_digest(&other[range]));
        }
        assert_eq!(joiner.root(), live.root());
        assert_eq!(joiner, tree_of(&other, 4096));
    }

    #[test]
    fn completion_round_trips_and_garbage_is_none() {
        let completion = Completion {
            session: SessionId(7),
            pieces: 42,
            digest: [3; 32],
            disk_root: Some([4; 32]),
        };
        assert_eq!(Completion::decode(&completion.encode()), Some(completion));
        assert_eq!(Completion::decode(&[1, 2]), None);
        let mut long = completion.encode();
        long.push(0);
        assert_eq!(Completion::decode(&long), None);
    }
}
