//! Image identifiers and split names shared by every dataset format.

use std::fmt;
use std::str::FromStr;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// An image's identity as its dataset spells it.
///
/// COCO numbers its images (`"image_id": 397133`); Flickr8k, Karpathy's Flickr files and user
/// folders name them by file (`"1000268201_693b08cb0e.jpg"`). Keeping the original kind matters
/// when results go back to the dataset's own tools: the COCO evaluation server matches
/// `image_id` as a JSON integer, so an id read as an integer serialises as an integer again, and
/// a name as a string.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ImageId {
    Int(u64),
    Name(String),
}

impl ImageId {
    pub fn as_int(&self) -> Option<u64> {
        match self {
            Self::Int(n) => Some(*n),
            Self::Name(_) => None,
        }
    }

    pub fn as_name(&self) -> Option<&str> {
        match self {
            Self::Int(_) => None,
            Self::Name(s) => Some(s),
        }
    }
}

impl fmt::Display for ImageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Int(n) => write!(f, "{n}"),
            Self::Name(s) => f.write_str(s),
        }
    }
}

impl From<u64> for ImageId {
    fn from(n: u64) -> Self {
        Self::Int(n)
    }
}

impl From<&str> for ImageId {
    fn from(s: &str) -> Self {
        Self::Name(s.to_owned())
    }
}

impl From<String> for ImageId {
    fn from(s: String) -> Self {
        Self::Name(s)
    }
}

impl Serialize for ImageId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Int(n) => s.serialize_u64(*n),
            Self::Name(name) => s.serialize_str(name),
        }
    }
}

impl<'de> Deserialize<'de> for ImageId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct IdVisitor;
        impl Visitor<'_> for IdVisitor {
            type Value = ImageId;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an image id: a non-negative integer or a string")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<ImageId, E> {
                Ok(ImageId::Int(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<ImageId, E> {
                u64::try_from(v)
                    .map(ImageId::Int)
                    .map_err(|_| E::invalid_value(de::Unexpected::Signed(v), &self))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<ImageId, E> {
                Ok(ImageId::Name(v.to_owned()))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<ImageId, E> {
                Ok(ImageId::Name(v))
            }
        }
        d.deserialize_any(IdVisitor)
    }
}

/// Which part of a dataset an image belongs to.
///
/// `Val` is also Flickr8k's "dev"; `Restval` is Karpathy's name for the COCO validation images
/// that his split moves into training.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Split {
    Train,
    Val,
    Test,
    Restval,
}

impl Split {
    pub const ALL: [Split; 4] = [Split::Train, Split::Val, Split::Test, Split::Restval];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Train => "train",
            Self::Val => "val",
            Self::Test => "test",
            Self::Restval => "restval",
        }
    }
}

impl fmt::Display for Split {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The split name was none of the accepted spellings.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown split {0:?}: expected train, val (or dev, validation), test or restval")]
pub struct UnknownSplit(pub String);

impl FromStr for Split {
    type Err = UnknownSplit;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "train" => Ok(Self::Train),
            "val" | "dev" | "validation" => Ok(Self::Val),
            "test" => Ok(Self::Test),
            "restval" => Ok(Self::Restval),
            _ => Err(UnknownSplit(s.to_owned())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn int_ids_stay_ints_in_json() {
        let ids = vec![
            ImageId::Int(397133),
            ImageId::from("1000268201_693b08cb0e.jpg"),
        ];
        let json = serde_json::to_string(&ids).unwrap();
        assert_eq!(json, r#"[397133,"1000268201_693b08cb0e.jpg"]"#);
        let back: Vec<ImageId> = serde_json::from_str(&json).unwrap();
        assert_eq!(back, ids);
    }

    #[test]
    fn numeric_strings_stay_strings() {
        let back: ImageId = serde_json::from_str(r#""42""#).unwrap();
        assert_eq!(back, ImageId::Name("42".into()));
        assert_eq!(serde_json::to_string(&back).unwrap(), r#""42""#);
    }

    #[test]
    fn rejects_negative_and_float_ids() {
        assert!(serde_json::from_str::<ImageId>("-1").is_err());
        assert!(serde_json::from_str::<ImageId>("1.5").is_err());
        assert!(serde_json::from_str::<ImageId>("null").is_err());
    }

    #[test]
    fn split_spellings() {
        assert_eq!("dev".parse::<Split>(), Ok(Split::Val));
        assert_eq!(" Train ".parse::<Split>(), Ok(Split::Train));
        assert_eq!("restval".parse::<Split>(), Ok(Split::Restval));
        assert!("training".parse::<Split>().is_err());
        for s in Split::ALL {
            assert_eq!(s.to_string().parse::<Split>(), Ok(s));
        }
    }
}
