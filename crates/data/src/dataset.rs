//! The one model every reader produces: images with their captions and split, plus a
//! [`LoadReport`] of what was skipped on the way.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{DataError, Location};
use crate::id::{ImageId, Split};

/// One image and all its reference captions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageEntry {
    pub id: ImageId,
    /// The image file relative to [`Dataset::images_dir`] (for COCO its `file_name`, for
    /// Flickr8k the id itself, for Karpathy `filepath/filename`).
    pub file: PathBuf,
    /// `None` when the source gives no split for this image.
    pub split: Option<Split>,
    /// Raw captions in file order (not normalised: see [`crate::Normalizer`]).
    pub captions: Vec<String>,
}

/// A captioning dataset: images in the order the source first mentions them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dataset {
    /// Where the image files are; `None` when the dataset was loaded without one (COCO
    /// annotations alone, a caption file parsed from memory).
    pub images_dir: Option<PathBuf>,
    pub images: Vec<ImageEntry>,
}

impl Dataset {
    pub fn len(&self) -> usize {
        self.images.len()
    }

    pub fn is_empty(&self) -> bool {
        self.images.is_empty()
    }

    pub fn num_captions(&self) -> usize {
        self.images.iter().map(|i| i.captions.len()).sum()
    }

    /// Full path of an image's file, when the dataset knows its images directory.
    pub fn image_path(&self, image: &ImageEntry) -> Option<PathBuf> {
        self.images_dir.as_ref().map(|dir| dir.join(&image.file))
    }

    /// The images of one split, in dataset order.
    pub fn split(&self, split: Split) -> impl Iterator<Item = &ImageEntry> + '_ {
        self.images.iter().filter(move |i| i.split == Some(split))
    }

    /// A copy holding only the images of `split` (or all of them for `None`).
    pub fn filtered(&self, split: Option<Split>) -> Dataset {
        Dataset {
            images_dir: self.images_dir.clone(),
            images: match split {
                None => self.images.clone(),
                Some(s) => self.split(s).cloned().collect(),
            },
        }
    }

    /// Every caption with the index of its image.
    pub fn captions(&self) -> impl Iterator<Item = (usize, &str)> + '_ {
        self.images
            .iter()
            .enumerate()
            .flat_map(|(i, img)| img.captions.iter().map(move |c| (i, c.as_str())))
    }

    /// Image counts per split; images without one count under `None`.
    pub fn split_counts(&self) -> BTreeMap<Option<Split>, usize> {
        let mut counts = BTreeMap::new();
        for image in &self.images {
            *counts.entry(image.split).or_insert(0) += 1;
        }
        counts
    }

    /// Finds an image by id.
    pub fn find(&self, id: &ImageId) -> Option<&ImageEntry> {
        self.images.iter().find(|i| &i.id == id)
    }
}

/// What a reader kept and what it skipped. Skips are warnings (logged through `tracing`), never
/// errors: a dataset with one broken image should still train.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoadReport {
    /// The file or directory the dataset came from.
    pub source: String,
    pub images: usize,
    pub captions: usize,
    /// Images whose file was not found in the images directory (dropped with their captions).
    pub missing_images: Vec<ImageId>,
    /// Captions dropped because their image file was missing.
    pub captions_without_image: usize,
    /// Captions dropped because they were empty or only whitespace.
    pub empty_captions: usize,
    /// Kept images that no split names (Flickr8k ids missing from the split files, for example).
    pub images_without_split: usize,
    /// Split-file entries that name an image with no captions (ignored).
    pub split_entries_without_captions: usize,
    /// Whether image files were checked at all (they are only when an images directory is known).
    pub checked_image_files: bool,
}

/// Collects captions image by image, keeping first-mention order, then checks image files.
#[derive(Debug, Default)]
pub(crate) struct Builder {
    images: Vec<ImageEntry>,
    index: HashMap<ImageId, usize>,
    empty_captions: usize,
}

impl Builder {
    /// Adds a caption, creating the image on first mention. An empty caption is counted, not
    /// kept, but its image still exists: its other captions may be fine.
    pub fn add(&mut self, id: ImageId, file: impl FnOnce() -> PathBuf, caption: &str) -> usize {
        let index = self.image(id, file);
        let caption = caption.trim();
        if caption.is_empty() {
            self.empty_captions += 1;
        } else if let Some(image) = self.images.get_mut(index) {
            image.captions.push(caption.to_owned());
        }
        index
    }

    /// The index of an image, created without captions on first mention.
    pub fn image(&mut self, id: ImageId, file: impl FnOnce() -> PathBuf) -> usize {
        if let Some(&i) = self.index.get(&id) {
            return i;
        }
        let i = self.images.len();
        self.images.push(ImageEntry {
            id: id.clone(),
            file: file(),
            split: None,
            captions: Vec::new(),
        });
        self.index.insert(id, i);
        i
    }

    pub fn set_split(&mut self, index: usize, split: Option<Split>) {
        if let Some(image) = self.images.get_mut(index) {
            image.split = split;
        }
    }

    /// Puts image `index` in `split`; an image listed in two different splits is an error at
    /// `location`, because silently keeping either would leak test images into training.
    pub fn assign_split(
        &mut self,
        index: usize,
        split: Split,
        location: Location,
    ) -> Result<(), DataError> {
        match self.images.get_mut(index) {
            Some(image) => match image.split {
                Some(previous) if previous != split => Err(DataError::parse(
                    location,
                    format!("{} is already in the {previous} split", image.id),
                )),
                _ => {
                    image.split = Some(split);
                    Ok(())
                }
            },
            None => Ok(()),
        }
    }

    pub fn index_of(&self, id: &ImageId) -> Option<usize> {
        self.index.get(id).copied()
    }

    /// Drops images without captions and, with an images directory, images whose file is
    /// missing (one warning per image, however many captions it had).
    pub fn finish(self, images_dir: Option<&Path>, source: &str) -> (Dataset, LoadReport) {
        let mut report = LoadReport {
            source: source.to_owned(),
            empty_captions: self.empty_captions,
            checked_image_files: images_dir.is_some(),
            ..LoadReport::default()
        };
        let mut kept = Vec::with_capacity(self.images.len());
        for image in self.images {
            if image.captions.is_empty() {
                continue;
            }
            if let Some(dir) = images_dir {
                let path = dir.join(&image.file);
                if !path.is_file() {
                    tracing::warn!(
                        "{source}: image {} has {} caption(s) but no file at {}; skipping it",
                        image.id,
                        image.captions.len(),
                        path.display()
                    );
                    report.captions_without_image += image.captions.len();
                    report.missing_images.push(image.id);
                    continue;
                }
            }
            if image.split.is_none() {
                report.images_without_split += 1;
            }
            kept.push(image);
        }
        if report.empty_captions > 0 {
            tracing::warn!(
                "{source}: skipped {} empty caption(s)",
                report.empty_captions
            );
        }
        let dataset = Dataset {
            images_dir: images_dir.map(Path::to_path_buf),
            images: kept,
        };
        report.images = dataset.len();
        report.captions = dataset.num_captions();
        (dataset, report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builder_keeps_first_mention_order_and_drops_empty() {
        let mut b = Builder::default();
        b.add("b.jpg".into(), || "b.jpg".into(), "one");
        b.add("a.jpg".into(), || "a.jpg".into(), "two");
        b.add("b.jpg".into(), || "b.jpg".into(), "  ");
        b.add("c.jpg".into(), || "c.jpg".into(), "");
        let (ds, report) = b.finish(None, "<input>");
        let ids: Vec<String> = ds.images.iter().map(|i| i.id.to_string()).collect();
        assert_eq!(ids, ["b.jpg", "a.jpg"]);
        assert_eq!(report.empty_captions, 2);
        assert_eq!(report.captions, 2);
        assert!(!report.checked_image_files);
    }

    #[test]
    fn missing_files_are_reported_once_per_image() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("here.jpg"), b"x").unwrap();
        let mut b = Builder::default();
        for c in ["a", "b", "c"] {
            b.add("gone.jpg".into(), || "gone.jpg".into(), c);
        }
        b.add("here.jpg".into(), || "here.jpg".into(), "ok");
        let (ds, report) = b.finish(Some(dir.path()), "test");
        assert_eq!(ds.len(), 1);
        assert_eq!(report.missing_images, vec![ImageId::from("gone.jpg")]);
        assert_eq!(report.captions_without_image, 3);
        assert_eq!(
            ds.image_path(&ds.images[0]),
            Some(dir.path().join("here.jpg"))
        );
    }
}
