use std::num::NonZeroU32;

use serde::{Deserialize, Serialize};

use super::*;

/// A module with a struct `Get` of these fields, and `KvGet`, a method
/// taking it: each use makes types of their own.
macro_rules! kv_get {
    ($module:ident, $name:literal, { $($field:ident: $type:ty),* }) => {
        mod $module {
            use serde::{Deserialize, Serialize};

            #[derive(Serialize, Deserialize)]
            pub(super) struct Get {
                $(pub(super) $field: $type),*
            }

            crate::service! { pub(super) service Kv { KvGet = $name: Get => Option<String>; } }
        }
    };
}

kv_get!(original, "kv.get.v1", { key: String, limit: u32 });
kv_get!(copy, "kv.get.v2", { key: String, limit: u32 });
kv_get!(added, "kv.get.v1", { key: String, limit: u32, fresh: bool });
kv_get!(renamed, "kv.get.v1", { name: String, limit: u32 });
kv_get!(retyped, "kv.get.v1", { key: String, limit: u64 });

mod response_retyped {
    use super::original::Get;

    crate::service! { pub(super) service Kv { KvGet = "kv.get.v1": Get => Option<Vec<u8>>; } }
}

#[derive(Serialize, Deserialize)]
struct Watch {
    key: String,
    from: Start,
}

#[derive(Serialize, Deserialize)]
enum Start {
    Now,
    Version(u64),
    Filtered { prefix: String, kind: Kind },
}

#[derive(Serialize, Deserialize)]
enum Kind {
    Puts,
    Deletes,
}

#[derive(Serialize, Deserialize)]
enum KindWithMore {
    Puts,
    Deletes,
    Both,
}

crate::service! {
    service Watches {
        WatchPartial = "kv.watch.v1": Watch => ();
        WatchFull = "kv.watch.v1": Watch => (), nested(Start, Kind);
        /// `WatchFull` with a variant more in the innermost enum (the names
        /// serde sees kept by renames).
        WatchMoreKinds = "kv.watch.v1": Watch2 => (), nested(Start2, KindWithMore);
    }
}

#[derive(Serialize, Deserialize)]
#[serde(rename = "Watch")]
struct Watch2 {
    key: String,
    from: Start2,
}

#[derive(Serialize, Deserialize)]
#[serde(rename = "Start")]
enum Start2 {
    Now,
    Version(u64),
    Filtered { prefix: String, kind: KindWithMore },
}

crate::service! {
    pub(super) service Misc {
        Unit = "t.unit.v1": () => ();
        Pair = "t.pair.v1": (u32, String) => Vec<u8>;
        Untraceable = "t.untraceable.v1": NonZeroU32 => ();
    }
}

#[test]
fn identical_definitions_in_two_modules_agree() {
    assert_eq!(
        fingerprint::<original::KvGet>(),
        fingerprint::<copy::KvGet>()
    );
    assert_eq!(schema::<original::KvGet>(), schema::<copy::KvGet>());
}

#[test]
fn a_changed_field_changes_the_fingerprint() {
    let original = fingerprint::<original::KvGet>();
    for (change, changed) in [
        ("added", fingerprint::<added::KvGet>()),
        ("renamed", fingerprint::<renamed::KvGet>()),
        ("retyped", fingerprint::<retyped::KvGet>()),
        ("response retyped", fingerprint::<response_retyped::KvGet>()),
    ] {
        assert_ne!(original, changed, "a field {change}");
    }
}

#[test]
fn nested_enums_count_in_full_only_when_traced() {
    let partial = schema::<WatchPartial>();
    let full = schema::<WatchFull>();
    // Untraced, the nested enum shows its first variant only.
    assert!(!partial.contains("Filtered"), "{partial}");
    assert!(
        full.contains("Filtered") && full.contains("Deletes"),
        "{full}"
    );
    assert_ne!(fingerprint::<WatchPartial>(), fingerprint::<WatchFull>());
    assert!(schema::<WatchMoreKinds>().contains("Both"));
    assert_ne!(fingerprint::<WatchFull>(), fingerprint::<WatchMoreKinds>());
}

#[test]
fn the_text_is_the_formats_then_the_registry() {
    assert_eq!(schema::<Unit>(), "UnitUnit{}");
    assert_eq!(schema::<Pair>(), "Tuple([U32, Str])Seq(U8){}");
    assert_eq!(
        schema::<original::KvGet>(),
        "TypeName(\"Get\")Option(Str)\
         {\"Get\": Struct([Named { name: \"key\", value: Str }, Named { name: \"limit\", value: U32 }])}"
    );
}

/// The values of the algorithm as specified; a change to it, or to the
/// `Debug` form of serde-reflection's formats, shows here. Such a change
/// makes every peer built before it see a schema mismatch: it needs a
/// protocol decision, not a new constant.
#[test]
fn pinned_values() {
    assert_eq!(fingerprint::<Unit>(), 0x29a0_dae8_c4d2_7ad4);
    assert_eq!(fingerprint::<Pair>(), 0xa3ed_a7f4_e8b9_0757);
    assert_eq!(fingerprint::<original::KvGet>(), 0x4760_47b3_b61d_2614);
    assert_eq!(fingerprint::<WatchFull>(), 0x7f93_bfd0_c9c1_c989);
}

#[test]
fn untraceable_types_fall_back_to_their_names() {
    let text = schema::<Untraceable>();
    assert_eq!(text, "untraced core::num::nonzero::NonZero<u32> ()");
    assert_eq!(fingerprint::<Untraceable>(), hash(&text));
}

#[test]
fn the_hash_is_the_first_eight_bytes_big_endian() {
    // SHA-256("abc") = ba7816bf 8f01cfea ...
    assert_eq!(hash("abc"), 0xba78_16bf_8f01_cfea);
    // The cache gives what was computed.
    assert_eq!(fingerprint::<Pair>(), hash(&schema::<Pair>()));
    assert_eq!(fingerprint::<Pair>(), fingerprint::<Pair>());
}
