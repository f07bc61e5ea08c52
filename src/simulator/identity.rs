//! The invented card holder of a simulated answer: deterministic for a given
//! image, plausible in shape (an ID number with a valid GB 11643 check digit),
//! and visibly fake (the address says it is simulated).

use sha2::{Digest, Sha256};

const SURNAMES: &[&str] = &["王", "李", "张", "刘", "陈", "杨", "赵", "黄"];
const GIVEN_NAMES: &[&str] = &["伟", "芳", "娜", "敏", "静", "磊", "洋", "婷"];
/// A 1×1 transparent PNG: the portrait of every simulated answer.
pub(crate) const PORTRAIT_PNG_BASE64: &str = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg==";

/// The fields read "from the card".
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Identity {
    /// Name.
    pub(crate) name: String,
    /// `男` or `女`, agreeing with the ID number.
    pub(crate) sex: &'static str,
    /// Ethnicity.
    pub(crate) nation: &'static str,
    /// `YYYY/M/D`, as Tencent formats it.
    pub(crate) birth: String,
    /// A clearly simulated address.
    pub(crate) address: String,
    /// 18 characters with a valid check digit.
    pub(crate) id_number: String,
    /// A similarity above the default threshold (90.00 to 99.99).
    pub(crate) similarity: f64,
}

impl Identity {
    /// The identity invented for an image (or URL) with these bytes. Only
    /// the length, the first and the last 4 KiB are hashed, to keep large
    /// images cheap.
    pub(crate) fn for_input(input: &[u8]) -> Self {
        const EDGE: usize = 4096;
        let mut hasher = Sha256::new();
        hasher.update((input.len() as u64).to_le_bytes());
        hasher.update(&input[..input.len().min(EDGE)]);
        hasher.update(&input[input.len().saturating_sub(EDGE)..]);
        let digest = hasher.finalize();
        let n = |i: usize| u32::from(digest[i]);
        let year = 1960 + n(0) % 45;
        let month = 1 + n(1) % 12;
        let day = 1 + n(2) % 28;
        let sequence = (n(3) << 8 | n(4)) % 1000;
        let body = format!("110101{year:04}{month:02}{day:02}{sequence:03}");
        let id_number = format!("{body}{}", check_digit(&body));
        let sex = if sequence % 2 == 1 { "男" } else { "女" };
        Self {
            name: format!(
                "{}{}",
                SURNAMES[digest[5] as usize % SURNAMES.len()],
                GIVEN_NAMES[digest[6] as usize % GIVEN_NAMES.len()]
            ),
            sex,
            nation: "汉",
            birth: format!("{year}/{month}/{day}"),
            address: format!(
                "模拟地址（simulated）北京市东城区测试路{}号",
                1 + n(7) % 200
            ),
            id_number,
            similarity: 90.0 + f64::from((n(8) << 8 | n(9)) % 1000) / 100.0,
        }
    }
}

/// The GB 11643-1999 check character of the first 17 digits.
pub(crate) fn check_digit(first17: &str) -> char {
    const WEIGHTS: [u32; 17] = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2];
    const CHECK: [char; 11] = ['1', '0', 'X', '9', '8', '7', '6', '5', '4', '3', '2'];
    let sum: u32 = first17
        .chars()
        .zip(WEIGHTS)
        .map(|(c, w)| c.to_digit(10).unwrap_or(0) * w)
        .sum();
    CHECK[(sum % 11) as usize]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_digit_of_the_standards_example() {
        // The worked example of GB 11643-1999.
        assert_eq!(check_digit("11010519491231002"), 'X');
    }

    #[test]
    fn identity_is_deterministic_and_well_formed() {
        let a = Identity::for_input(b"image one");
        assert_eq!(a, Identity::for_input(b"image one"));
        assert_ne!(a.id_number, Identity::for_input(b"image two").id_number);
        assert_eq!(a.id_number.len(), 18);
        assert_eq!(
            a.id_number.chars().last(),
            Some(check_digit(&a.id_number[..17]))
        );
        assert!((90.0..100.0).contains(&a.similarity));
        assert!(a.address.contains("simulated"));
    }
}
