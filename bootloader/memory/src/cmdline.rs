//! The kernel command line our UEFI loader hands over: the words of `\understudy\cmdline` on the
//! boot volume, then the `understudy.` words of the firmware's load options.
//!
//! The file lets an image carry options (`mkimage set-cmdline`); the load options are the
//! boot-time override for a machine whose disk cannot be edited: the UEFI shell passes its
//! command line (`fs0:\EFI\BOOT\BOOTX64.EFI understudy.role=backup`), and a firmware boot entry
//! passes its optional data. Firmware may put binary data there, so load options that are not
//! text are ignored, and of text only `understudy.<name>=<value>` words are taken (the shell's
//! first word is the program's own path). mkimage checks a file with the same rules.

use core::fmt;

/// Largest `\understudy\cmdline` file, in bytes (comments included).
pub const COMMAND_LINE_FILE_BYTES_MAX: usize = 4096;
/// Longest command line the loader hands over, in bytes without the terminating NUL: it shares
/// the start-info page with the module list (`bootinfo::COMMAND_LINE_BYTES_MAX` is the reader's
/// larger bound).
pub const LOADER_COMMAND_LINE_BYTES_MAX: usize = 2047;
/// Load options longer than this (UCS-2 units) are not an operator's typing and are ignored.
pub const LOAD_OPTIONS_UNITS_MAX: usize = 4096;
/// The prefix of the words the loader takes from load options.
pub const KERNEL_OPTION_PREFIX: &str = "understudy.";

/// Why a command line was refused. Line numbers count from 1.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CommandLineError {
    /// A byte outside printable ASCII inside a word of the file.
    NotPrintable { line: usize },
    /// The words do not fit.
    TooLong { max: usize },
}

impl fmt::Display for CommandLineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::NotPrintable { line } => write!(
                f,
                "line {line}: a byte that is not printable ASCII; write words like understudy.role=backup"
            ),
            Self::TooLong { max } => {
                write!(f, "the command line is longer than {max} bytes; shorten it")
            }
        }
    }
}

impl core::error::Error for CommandLineError {}

/// A command line being assembled, words separated by one space.
pub struct CommandLine {
    bytes: [u8; LOADER_COMMAND_LINE_BYTES_MAX],
    length: usize,
}

impl Default for CommandLine {
    fn default() -> Self {
        Self::new()
    }
}

impl CommandLine {
    pub const fn new() -> Self {
        CommandLine {
            bytes: [0; LOADER_COMMAND_LINE_BYTES_MAX],
            length: 0,
        }
    }

    /// The words so far, without a terminating NUL.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.length]
    }

    pub fn is_empty(&self) -> bool {
        self.length == 0
    }

    fn push_word(&mut self, word: &[u8]) -> Result<(), CommandLineError> {
        let separator = usize::from(self.length > 0);
        let end = self.length + separator + word.len();
        if end > self.bytes.len() {
            return Err(CommandLineError::TooLong {
                max: LOADER_COMMAND_LINE_BYTES_MAX,
            });
        }
        if separator == 1 {
            self.bytes[self.length] = b' ';
        }
        self.bytes[self.length + separator..end].copy_from_slice(word);
        self.length = end;
        Ok(())
    }

    /// Adds the words of a command-line file: whitespace separates words, `#` starts a comment
    /// that runs to the end of the line, and every other byte must be printable ASCII.
    pub fn push_file(&mut self, text: &[u8]) -> Result<(), CommandLineError> {
        for (index, line) in text.split(|&b| b == b'\n').enumerate() {
            let content = match line.iter().position(|&b| b == b'#') {
                Some(comment) => &line[..comment],
                None => line,
            };
            for word in content
                .split(|b| b.is_ascii_whitespace())
                .filter(|word| !word.is_empty())
            {
                if !word.iter().all(|b| b.is_ascii_graphic()) {
                    return Err(CommandLineError::NotPrintable { line: index + 1 });
                }
                self.push_word(word)?;
            }
        }
        Ok(())
    }

    /// Adds the `understudy.<name>=<value>` words of UEFI load options (UCS-2, up to the first
    /// NUL). Options that are not printable ASCII text are somebody else's data and add nothing.
    pub fn push_load_options(&mut self, units: &[u16]) -> Result<(), CommandLineError> {
        let end = units.iter().position(|&u| u == 0).unwrap_or(units.len());
        let units = &units[..end];
        let is_text = units.len() <= LOAD_OPTIONS_UNITS_MAX
            && units.iter().all(|&u| {
                u8::try_from(u).is_ok_and(|b| b.is_ascii_graphic() || b.is_ascii_whitespace())
            });
        if !is_text {
            return Ok(());
        }
        let mut word = [0u8; LOADER_COMMAND_LINE_BYTES_MAX];
        for unit_word in units
            .split(|&u| u8::try_from(u).is_ok_and(|b| b.is_ascii_whitespace()))
            .filter(|w| !w.is_empty())
        {
            if unit_word.len() > word.len() {
                return Err(CommandLineError::TooLong {
                    max: LOADER_COMMAND_LINE_BYTES_MAX,
                });
            }
            for (byte, &unit) in word.iter_mut().zip(unit_word) {
                // Checked above: every unit is ASCII.
                *byte = unit as u8;
            }
            let word = &word[..unit_word.len()];
            let is_option =
                word.starts_with(KERNEL_OPTION_PREFIX.as_bytes()) && word.contains(&b'=');
            if is_option {
                self.push_word(word)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ucs2(text: &str) -> Vec<u16> {
        text.encode_utf16().chain([0]).collect()
    }

    #[test]
    fn file_words_are_joined_by_one_space_and_comments_dropped() {
        let mut line = CommandLine::new();
        line.push_file(
            b"# set by mkimage\n  understudy.role=backup\t understudy.selftest=disk # why\r\n\n",
        )
        .unwrap();
        assert_eq!(
            line.as_bytes(),
            b"understudy.role=backup understudy.selftest=disk"
        );
    }

    #[test]
    fn load_options_give_only_understudy_words_after_the_file() {
        let mut line = CommandLine::new();
        line.push_file(b"understudy.selftest=disk\n").unwrap();
        line.push_load_options(&ucs2(
            r"fs0:\EFI\BOOT\BOOTX64.EFI understudy.role=arbiter quiet understudy.efi",
        ))
        .unwrap();
        assert_eq!(
            line.as_bytes(),
            b"understudy.selftest=disk understudy.role=arbiter"
        );
    }

    #[test]
    fn load_options_that_are_not_text_add_nothing() {
        let mut line = CommandLine::new();
        // A firmware boot entry's binary optional data (here a GUID-like blob).
        line.push_load_options(&[0x4e41, 0x0102, 0x0001, 0xffff])
            .unwrap();
        line.push_load_options(&ucs2("understudy.role=backup\u{e9}"))
            .unwrap();
        line.push_load_options(&[]).unwrap();
        assert!(line.is_empty());
    }

    #[test]
    fn unprintable_bytes_in_the_file_are_refused_with_their_line() {
        let mut line = CommandLine::new();
        assert_eq!(
            line.push_file(b"understudy.role=backup\nunderstudy.role=b\xc3\xa4ckup\n"),
            Err(CommandLineError::NotPrintable { line: 2 })
        );
        // Non-ASCII inside a comment is fine.
        let mut line = CommandLine::new();
        line.push_file("understudy.role=backup # für später\n".as_bytes())
            .unwrap();
        assert_eq!(line.as_bytes(), b"understudy.role=backup");
    }

    #[test]
    fn a_command_line_that_does_not_fit_is_refused() {
        let word = [b'a'; 1000];
        let mut text = std::vec::Vec::new();
        for _ in 0..2 {
            text.extend_from_slice(&word);
            text.push(b' ');
        }
        let mut line = CommandLine::new();
        line.push_file(&text).unwrap();
        assert_eq!(line.as_bytes().len(), 2001);
        assert_eq!(
            line.push_file(&[b'b'; 46]),
            Err(CommandLineError::TooLong {
                max: LOADER_COMMAND_LINE_BYTES_MAX
            })
        );
        line.push_file(&[b'b'; 45]).unwrap();
        assert_eq!(line.as_bytes().len(), LOADER_COMMAND_LINE_BYTES_MAX);
        let long = std::format!("understudy.x={}", "y".repeat(3000));
        assert!(CommandLine::new().push_load_options(&ucs2(&long)).is_err());
    }

    #[test]
    fn random_load_options_never_panic_and_give_only_option_words() {
        // Mostly ASCII with some other units, so both the text and the not-text paths run.
        let alphabet: std::vec::Vec<u16> = "understudy.role=backup \t:\\#"
            .encode_utf16()
            .chain([0, 0xe9, 0xd800, 0x7f])
            .collect();
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 33) as usize
        };
        let mut taken = 0;
        for _ in 0..20_000 {
            let length = next() % 64;
            // Half start with an option word, so taken words are common too.
            let prefix = if next() % 2 == 0 { "understudy.x=" } else { "" };
            let units: std::vec::Vec<u16> = prefix
                .encode_utf16()
                .chain((0..length).map(|_| alphabet[next() % alphabet.len()]))
                .collect();
            let mut line = CommandLine::new();
            if line.push_load_options(&units).is_ok() {
                for word in line.as_bytes().split(|&b| b == b' ') {
                    if line.is_empty() {
                        break;
                    }
                    assert!(word.starts_with(b"understudy.") && word.contains(&b'='));
                    assert!(word.iter().all(|b| b.is_ascii_graphic()));
                    taken += 1;
                }
            }
        }
        assert!(
            taken > 1000,
            "only {taken} words taken: the test inputs are too narrow"
        );
    }
}
