#![no_main]
use captioner_data::{coco, ImageId};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok((dataset, _)) = coco::from_bytes(data, "fuzz", None) {
        // Ids must survive a JSON round trip in their original kind (int stays int).
        for image in &dataset.images {
            let json = serde_json::to_string(&image.id).expect("ids serialise");
            let back: ImageId = serde_json::from_str(&json).expect("ids parse back");
            assert_eq!(back, image.id);
        }
    }
});
