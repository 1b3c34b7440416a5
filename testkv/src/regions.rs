//! The key space cut into regions, each led by one store. PD speaks of region
//! bounds in TiKV's memcomparable encoding (the client encodes keys it asks PD
//! about and decodes the bounds it gets back); TiKV requests carry raw keys.

use crate::proto::errorpb;
use crate::proto::kv::Context;
use crate::proto::meta::{Peer, Region as RegionMessage, RegionEpoch};

const GROUP: usize = 8;
const MARKER: u8 = 0xff;

/// Memcomparable encoding: 8-byte groups, the last padded with zeros, each
/// followed by `0xff - padding`. (A key whose length is a multiple of 8 ends with
/// an all-padding group.)
pub fn encode(key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity((key.len() / GROUP + 1) * (GROUP + 1));
    for index in (0..=key.len()).step_by(GROUP) {
        let rest = &key[index..];
        if rest.len() > GROUP {
            out.extend_from_slice(&rest[..GROUP]);
            out.push(MARKER);
        } else {
            let pad = GROUP - rest.len();
            out.extend_from_slice(rest);
            out.extend(std::iter::repeat_n(0, pad));
            out.push(MARKER - pad as u8);
        }
    }
    out
}

/// The inverse of `encode`; `None` for bytes `encode` cannot produce.
pub fn decode(encoded: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(encoded.len());
    for chunk in encoded.chunks(GROUP + 1) {
        let [group @ .., marker] = chunk else {
            return None;
        };
        if group.len() != GROUP {
            return None;
        }
        let pad = usize::from(MARKER.checked_sub(*marker)?);
        if pad > GROUP {
            return None;
        }
        out.extend_from_slice(&group[..GROUP - pad]);
        if pad > 0 {
            return Some(out);
        }
    }
    None
}

/// PD's empty key means "unbounded" and is not encoded.
fn encode_bound(key: &[u8]) -> Vec<u8> {
    if key.is_empty() {
        Vec::new()
    } else {
        encode(key)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Region {
    pub id: u64,
    pub start: Vec<u8>,
    /// Exclusive; empty: unbounded.
    pub end: Vec<u8>,
    pub version: u64,
    pub conf_ver: u64,
    pub store: u64,
}

impl Region {
    pub fn contains(&self, key: &[u8]) -> bool {
        key >= self.start.as_slice() && (self.end.is_empty() || key < self.end.as_slice())
    }

    /// The region's one peer (its leader) lives on its store.
    pub fn peer(&self) -> Peer {
        Peer {
            id: 1000 + self.id,
            store_id: self.store,
        }
    }

    /// As PD describes it: bounds encoded.
    pub fn message(&self) -> RegionMessage {
        RegionMessage {
            id: self.id,
            start_key: encode_bound(&self.start),
            end_key: encode_bound(&self.end),
            region_epoch: Some(RegionEpoch {
                conf_ver: self.conf_ver,
                version: self.version,
            }),
            peers: vec![self.peer()],
        }
    }
}

/// The regions, in key order, covering the whole key space.
#[derive(Debug)]
pub struct Regions {
    regions: Vec<Region>,
    stores: u64,
    next_id: u64,
}

impl Regions {
    /// Regions cut at `split_keys`, handed out to the stores in turn.
    pub fn new(stores: u64, split_keys: &[Vec<u8>]) -> Self {
        let mut regions = Self {
            regions: vec![Region {
                id: 2,
                start: Vec::new(),
                end: Vec::new(),
                version: 1,
                conf_ver: 1,
                store: 1,
            }],
            stores: stores.max(1),
            next_id: 3,
        };
        let mut keys = split_keys.to_vec();
        keys.sort();
        keys.dedup();
        for key in keys {
            regions.split(&key);
        }
        regions
    }

    pub fn all(&self) -> &[Region] {
        &self.regions
    }

    pub fn by_key(&self, key: &[u8]) -> Option<&Region> {
        self.regions.iter().find(|region| region.contains(key))
    }

    pub fn by_id(&self, id: u64) -> Option<&Region> {
        self.regions.iter().find(|region| region.id == id)
    }

    /// Splits the region holding `key` at it: the upper part is a new region on the
    /// next store, and both parts get a new epoch version (so requests routed by
    /// the old bounds get `EpochNotMatch`). A key already at a boundary changes
    /// nothing.
    pub fn split(&mut self, key: &[u8]) -> bool {
        let Some(index) = self.regions.iter().position(|region| region.contains(key)) else {
            return false;
        };
        if self.regions[index].start == key || key.is_empty() {
            return false;
        }
        let id = self.next_id;
        self.next_id += 1;
        let stores = self.stores;
        let old = &mut self.regions[index];
        old.version += 1;
        let upper = Region {
            id,
            start: key.to_vec(),
            end: std::mem::replace(&mut old.end, key.to_vec()),
            version: old.version,
            conf_ver: old.conf_ver,
            store: old.store % stores + 1,
        };
        self.regions.insert(index + 1, upper);
        true
    }

    /// Why a request for `keys` in the region its context names cannot be served
    /// by `store`, as the region error TiKV would send.
    pub fn check<'a>(
        &self,
        context: Option<&Context>,
        store: u64,
        mut keys: impl Iterator<Item = &'a [u8]>,
    ) -> Result<&Region, errorpb::Error> {
        let id = context.map_or(0, |context| context.region_id);
        let Some(region) = self.by_id(id) else {
            return Err(errorpb::Error {
                message: format!("region {id} not found"),
                region_not_found: Some(errorpb::RegionNotFound { region_id: id }),
                ..Default::default()
            });
        };
        let epoch = context.and_then(|context| context.region_epoch.as_ref());
        let current = (region.conf_ver, region.version);
        if epoch.map(|epoch| (epoch.conf_ver, epoch.version)) != Some(current) {
            return Err(errorpb::Error {
                message: format!("region {id}: epoch not match"),
                epoch_not_match: Some(errorpb::EpochNotMatch {
                    current_regions: self.regions.iter().map(Region::message).collect(),
                }),
                ..Default::default()
            });
        }
        if region.store != store {
            return Err(not_leader(region));
        }
        if let Some(key) = keys.find(|key| !region.contains(key)) {
            return Err(errorpb::Error {
                message: format!("key is not in region {id}"),
                key_not_in_region: Some(errorpb::KeyNotInRegion {
                    key: key.to_vec(),
                    region_id: id,
                    start_key: region.start.clone(),
                    end_key: region.end.clone(),
                }),
                ..Default::default()
            });
        }
        Ok(region)
    }
}

/// `NotLeader` naming the region's actual leader.
pub fn not_leader(region: &Region) -> errorpb::Error {
    errorpb::Error {
        message: format!("store is not the leader of region {}", region.id),
        not_leader: Some(errorpb::NotLeader {
            region_id: region.id,
            leader: Some(region.peer()),
        }),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_encode_as_tikv_does_and_decode_back() {
        let cases: [(&[u8], &[u8]); 3] = [
            (b"", &[0, 0, 0, 0, 0, 0, 0, 0, 247]),
            (b"abc", &[b'a', b'b', b'c', 0, 0, 0, 0, 0, 250]),
            (
                b"12345678",
                &[
                    b'1', b'2', b'3', b'4', b'5', b'6', b'7', b'8', 255, 0, 0, 0, 0, 0, 0, 0, 0,
                    247,
                ],
            ),
        ];
        for (raw, encoded) in cases {
            assert_eq!(encode(raw), encoded, "{raw:?}");
            assert_eq!(decode(encoded).as_deref(), Some(raw));
        }
        let long = b"0123456789abcdefXYZ".to_vec();
        assert_eq!(decode(&encode(&long)), Some(long));
        assert_eq!(decode(&[1, 2, 3]), None, "a short group is refused");
        assert!(encode(b"a") < encode(b"a\0") && encode(b"a\0") < encode(b"b"));
    }

    #[test]
    fn splits_cut_regions_and_bump_their_epoch() {
        let mut regions = Regions::new(2, &[b"m".to_vec()]);
        assert_eq!(regions.all().len(), 2);
        let (low, high) = (regions.by_key(b"a").cloned(), regions.by_key(b"z").cloned());
        let (low, high) = (low.expect("low"), high.expect("high"));
        assert_eq!(
            (low.end.as_slice(), high.start.as_slice()),
            (&b"m"[..], &b"m"[..])
        );
        assert_ne!(low.store, high.store, "the halves live on different stores");
        assert!(regions.split(b"t"));
        assert!(!regions.split(b"t"), "a boundary splits nothing");
        let stale = Context {
            region_id: high.id,
            region_epoch: Some(RegionEpoch {
                conf_ver: high.conf_ver,
                version: high.version,
            }),
            peer: None,
        };
        let err = regions
            .check(Some(&stale), high.store, std::iter::once(&b"n"[..]))
            .expect_err("the old epoch is refused");
        assert!(err.epoch_not_match.is_some());
        let fresh = regions.by_key(b"n").expect("region").clone();
        let context = Context {
            region_id: fresh.id,
            region_epoch: Some(RegionEpoch {
                conf_ver: fresh.conf_ver,
                version: fresh.version,
            }),
            peer: None,
        };
        let err = regions
            .check(
                Some(&context),
                fresh.store % 2 + 1,
                std::iter::once(&b"n"[..]),
            )
            .expect_err("the wrong store is refused");
        assert_eq!(
            err.not_leader.and_then(|n| n.leader).map(|p| p.store_id),
            Some(fresh.store)
        );
        let err = regions
            .check(Some(&context), fresh.store, std::iter::once(&b"u"[..]))
            .expect_err("a key past the split is refused");
        assert!(err.key_not_in_region.is_some());
        assert!(
            regions
                .check(Some(&context), fresh.store, std::iter::once(&b"n"[..]))
                .is_ok()
        );
    }
}
