//! Volume capabilities and topology: what a volfs volume can be (a filesystem on one node, with
//! any single-node access mode) and where it is (this node).

use std::collections::HashMap;

use crate::csi::v1::volume_capability::access_mode::Mode;
use crate::csi::v1::volume_capability::AccessType;
use crate::csi::v1::{Topology, TopologyRequirement, VolumeCapability};
use crate::error::{Error, Result};

/// The topology key whose value is the node a volume lives on.
pub const TOPOLOGY_KEY: &str = "topology.volfs.io/node";

/// Why a capability cannot be served.
#[derive(Debug, PartialEq)]
pub enum Refusal {
    /// A required field is missing or meaningless: INVALID_ARGUMENT whatever the RPC.
    Malformed(String),
    /// Well-formed, but volfs does not offer it; each RPC answers this its own way.
    Unsupported(String),
}

/// The access mode of a capability volfs can serve.
pub fn access_mode(cap: &VolumeCapability) -> std::result::Result<Mode, Refusal> {
    let mode = cap.access_mode.as_ref().ok_or_else(|| Refusal::Malformed("access_mode is missing".into()))?.mode;
    let mode =
        Mode::try_from(mode).map_err(|_| Refusal::Malformed(format!("access mode {mode} is not a CSI access mode")))?;
    match cap.access_type.as_ref() {
        None => return Err(Refusal::Malformed("access_type is missing: it must be mount".into())),
        Some(AccessType::Block(_)) => {
            return Err(Refusal::Unsupported("block access is not offered: volfs volumes are filesystems".into()))
        }
        Some(AccessType::Mount(m)) => {
            if !matches!(m.fs_type.as_str(), "" | "volfs" | "fuse.volfs") {
                return Err(Refusal::Unsupported(format!(
                    "fs_type {:?} is not offered: volfs volumes are volfs filesystems (leave fs_type empty)",
                    m.fs_type
                )));
            }
            if let Some(flag) = m.mount_flags.first() {
                return Err(Refusal::Unsupported(format!(
                    "mount flag {flag:?} is not supported (volfs takes no mount options; use readonly)"
                )));
            }
        }
    }
    match mode {
        Mode::Unknown => Err(Refusal::Malformed("access mode UNKNOWN is not an access mode".into())),
        Mode::SingleNodeWriter
        | Mode::SingleNodeReaderOnly
        | Mode::SingleNodeSingleWriter
        | Mode::SingleNodeMultiWriter => Ok(mode),
        Mode::MultiNodeReaderOnly | Mode::MultiNodeSingleWriter | Mode::MultiNodeMultiWriter => {
            Err(Refusal::Unsupported(format!(
                "access mode {} is not offered: a volfs volume lives in one node's pool and cannot be reached \
                 from other nodes (use a SINGLE_NODE_* mode)",
                mode.as_str_name()
            )))
        }
    }
}

/// The access modes of `caps`, each servable, as one error naming the first problem otherwise;
/// `unsupported` makes the error for a well-formed capability volfs does not offer.
pub fn access_modes(caps: &[VolumeCapability], unsupported: fn(String) -> Error) -> Result<Vec<Mode>> {
    if caps.is_empty() {
        return Err(Error::InvalidArgument("volume_capabilities is missing".into()));
    }
    caps.iter().map(|c| one_mode(Some(c), unsupported)).collect()
}

/// The access mode of a required single capability.
pub fn one_mode(cap: Option<&VolumeCapability>, unsupported: fn(String) -> Error) -> Result<Mode> {
    let cap = cap.ok_or_else(|| Error::InvalidArgument("volume_capability is missing".into()))?;
    access_mode(cap).map_err(|r| match r {
        Refusal::Malformed(m) => Error::InvalidArgument(format!("volume_capability: {m}")),
        Refusal::Unsupported(m) => unsupported(format!("volume_capability: {m}")),
    })
}

/// This node's topology segment.
pub fn topology(node_id: &str) -> Topology {
    Topology { segments: HashMap::from([(TOPOLOGY_KEY.to_string(), node_id.to_string())]) }
}

/// Whether a volume on `node_id` can satisfy the requirement: when `requisite` names
/// topologies, this node's must be one of them.
pub fn satisfies(requirement: Option<&TopologyRequirement>, node_id: &str) -> Result<()> {
    let Some(req) = requirement else { return Ok(()) };
    let here = topology(node_id);
    if req.requisite.is_empty() || req.requisite.contains(&here) {
        return Ok(());
    }
    Err(Error::ResourceExhausted(format!(
        "volumes of this driver live on node {node_id} ({TOPOLOGY_KEY}={node_id}); the requisite topologies {:?} \
         do not include it",
        req.requisite.iter().map(|t| &t.segments).collect::<Vec<_>>()
    )))
}

/// Whether a mode lets only one workload write.
pub fn single_writer(mode: Mode) -> bool {
    matches!(mode, Mode::SingleNodeWriter | Mode::SingleNodeSingleWriter)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::csi::v1::volume_capability::{AccessMode, BlockVolume, MountVolume};

    fn cap(mode: Mode, access: Option<AccessType>) -> VolumeCapability {
        VolumeCapability { access_mode: Some(AccessMode { mode: mode as i32 }), access_type: access }
    }

    fn mount(fs_type: &str, flags: &[&str]) -> Option<AccessType> {
        Some(AccessType::Mount(MountVolume {
            fs_type: fs_type.into(),
            mount_flags: flags.iter().map(|f| f.to_string()).collect(),
            volume_mount_group: String::new(),
        }))
    }

    #[test]
    fn single_node_filesystems_are_served() {
        for mode in [
            Mode::SingleNodeWriter,
            Mode::SingleNodeReaderOnly,
            Mode::SingleNodeSingleWriter,
            Mode::SingleNodeMultiWriter,
        ] {
            assert_eq!(access_mode(&cap(mode, mount("", &[]))), Ok(mode));
        }
        assert!(access_mode(&cap(Mode::SingleNodeWriter, mount("volfs", &[]))).is_ok());
    }

    #[test]
    fn what_one_node_cannot_honour_is_refused_saying_why() {
        let refused = |c| match access_mode(&c) {
            Err(Refusal::Unsupported(m)) => m,
            other => panic!("{other:?}"),
        };
        assert!(refused(cap(Mode::MultiNodeMultiWriter, mount("", &[]))).contains("one node's pool"));
        assert!(refused(cap(Mode::SingleNodeWriter, Some(AccessType::Block(BlockVolume {})))).contains("block"));
        assert!(refused(cap(Mode::SingleNodeWriter, mount("ext4", &[]))).contains("ext4"));
        assert!(refused(cap(Mode::SingleNodeWriter, mount("", &["noatime"]))).contains("noatime"));
    }

    #[test]
    fn missing_fields_are_malformed() {
        assert!(matches!(access_mode(&cap(Mode::SingleNodeWriter, None)), Err(Refusal::Malformed(_))));
        assert!(matches!(access_mode(&cap(Mode::Unknown, mount("", &[]))), Err(Refusal::Malformed(_))));
        let no_mode = VolumeCapability { access_mode: None, access_type: mount("", &[]) };
        assert!(matches!(access_mode(&no_mode), Err(Refusal::Malformed(_))));
    }

    #[test]
    fn topology_requires_this_node_among_the_requisite() {
        let req = |nodes: &[&str]| TopologyRequirement {
            requisite: nodes.iter().map(|n| topology(n)).collect(),
            preferred: vec![],
        };
        assert!(satisfies(None, "a").is_ok());
        assert!(satisfies(Some(&req(&[])), "a").is_ok());
        assert!(satisfies(Some(&req(&["b", "a"])), "a").is_ok());
        assert!(matches!(satisfies(Some(&req(&["b"])), "a"), Err(Error::ResourceExhausted(m)) if m.contains("node a")));
    }
}
