//! A validated deploy file: loading it in layers, and the routes, owners and shares it gives.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use config::{Config, Environment, File, FileFormat};

use crate::deploy::Deploy;
use crate::error::ConfigError;
use crate::placement::Placement;
use crate::spec::{CellSpec, RouterSpec};
use crate::validate::validate;

/// A validated deploy file and the placement derived from it.
#[derive(Debug, Clone)]
pub struct Topology {
    source: String,
    deploy: Deploy,
    cells: Vec<CellSpec>,
    routers: Vec<RouterSpec>,
    placement: Placement,
}

impl Topology {
    /// Loads `path` in layers (built-in defaults, the file, then `LDC_` environment
    /// variables: `LDC_SLOTS`, `LDC_TIMEOUTS__CONNECT_TIMEOUT_MS`, ...) and validates it.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        Self::load_with_env(path, None)
    }

    /// Like [`Topology::load`], with the environment given as a map instead of read
    /// from the process (for tests).
    pub fn load_with_env(
        path: &Path,
        env: Option<HashMap<String, String>>,
    ) -> Result<Self, ConfigError> {
        let file = path.display().to_string();
        let parse_error = |err: config::ConfigError| ConfigError::Parse {
            file: file.clone(),
            message: format!("{err} (keys come from the file and from LDC_ environment variables)"),
        };
        if !path.is_file() {
            return Err(ConfigError::Parse {
                file,
                message: "no such file".to_owned(),
            });
        }
        let deploy: Deploy = Config::builder()
            .add_source(File::from(path).format(FileFormat::Toml))
            .add_source(
                Environment::with_prefix("LDC")
                    .prefix_separator("_")
                    .separator("__")
                    .try_parsing(true)
                    .list_separator(",")
                    .with_list_parse_key("ledger.pd_endpoints")
                    .source(env),
            )
            .build()
            .map_err(parse_error)?
            .try_deserialize()
            .map_err(parse_error)?;
        Self::from_deploy(file, deploy)
    }

    /// Parses a deploy file's text, without environment overrides.
    pub fn from_toml_str(source: impl Into<String>, text: &str) -> Result<Self, ConfigError> {
        let source = source.into();
        let deploy: Deploy = Config::builder()
            .add_source(File::from_str(text, FileFormat::Toml))
            .build()
            .and_then(Config::try_deserialize)
            .map_err(|err| ConfigError::Parse {
                file: source.clone(),
                message: err.to_string(),
            })?;
        Self::from_deploy(source, deploy)
    }

    /// Validates a parsed deploy file; `source` names it in error messages.
    pub fn from_deploy(source: impl Into<String>, deploy: Deploy) -> Result<Self, ConfigError> {
        let source = source.into();
        let (cells, routers) = match validate(&deploy) {
            Ok(specs) => specs,
            Err(problems) => {
                return Err(ConfigError::Invalid {
                    file: source,
                    problems,
                });
            }
        };
        let index: HashMap<&str, usize> = cells
            .iter()
            .enumerate()
            .map(|(i, c)| (c.id.as_str(), i))
            .collect();
        let weights: Vec<(&str, u32)> = cells.iter().map(|c| (c.id.as_str(), c.weight)).collect();
        let overrides: Vec<_> = deploy
            .overrides
            .iter()
            .map(|o| (o.from..=o.last(), index[o.cell.as_str()]))
            .collect();
        let placement = Placement::build(
            &weights,
            deploy.slots,
            deploy.placement.vnodes_per_weight,
            &overrides,
            deploy.epoch,
        );
        Ok(Self {
            source,
            deploy,
            cells,
            routers,
            placement,
        })
    }

    /// The file this topology came from, for messages.
    pub fn source(&self) -> &str {
        &self.source
    }

    pub fn deploy(&self) -> &Deploy {
        &self.deploy
    }

    pub fn cells(&self) -> &[CellSpec] {
        &self.cells
    }

    pub fn routers(&self) -> &[RouterSpec] {
        &self.routers
    }

    pub fn placement(&self) -> &Placement {
        &self.placement
    }

    /// Where the deployment's CA and process certificates live.
    pub fn certs_dir(&self) -> PathBuf {
        let security = &self.deploy.security;
        security
            .certs_dir
            .clone()
            .unwrap_or_else(|| self.deploy.data_dir.join("certs"))
    }

    /// The file holding the operators' admin token.
    pub fn admin_token_file(&self) -> PathBuf {
        let security = &self.deploy.security;
        security
            .admin_token_file
            .clone()
            .unwrap_or_else(|| self.certs_dir().join("admin.token"))
    }

    pub fn cell_index(&self, id: &str) -> Option<usize> {
        self.cells.iter().position(|c| c.id == id)
    }

    pub fn router(&self, id: &str) -> Option<&RouterSpec> {
        self.routers.iter().find(|r| r.id == id)
    }

    /// Region ids in file order.
    pub fn regions(&self) -> impl Iterator<Item = &str> {
        self.deploy.regions.iter().map(|r| r.id.as_str())
    }

    /// The slot of `user_id` and the index of the cell that owns it.
    #[inline]
    pub fn route(&self, user_id: &str) -> (u32, usize) {
        let slot = self.placement.slot_of(user_id);
        (slot, self.placement.owner(slot))
    }

    /// The cell that owns `slot`. Panics if `slot` is out of range.
    pub fn owner(&self, slot: u32) -> &CellSpec {
        &self.cells[self.placement.owner(slot)]
    }

    /// Number of slots each cell owns, indexed like [`Topology::cells`].
    pub fn slots_per_cell(&self) -> Vec<u32> {
        self.placement.slots_per_cell(self.cells.len())
    }

    /// The index of the cell hosting the global zone, if the deployment has one.
    pub fn global_zone(&self) -> Option<usize> {
        let gz = self.deploy.global_zone.as_ref()?;
        self.cell_index(&gz.cell)
    }

    /// Each cell's share of `stock` units by weight, indexed like [`Topology::cells`]:
    /// the integer part of the weighted share, plus one unit each to the cells with
    /// the largest remainders (ties to the earlier cell), so shares sum to `stock`.
    pub fn stock_shares(&self, stock: u64) -> Vec<u64> {
        let total: u128 = self.cells.iter().map(|c| u128::from(c.weight)).sum();
        let exact: Vec<(u64, u128)> = self
            .cells
            .iter()
            .map(|c| {
                let weighted = u128::from(stock) * u128::from(c.weight);
                ((weighted / total) as u64, weighted % total)
            })
            .collect();
        let mut shares: Vec<u64> = exact.iter().map(|(share, _)| *share).collect();
        let left = stock - shares.iter().sum::<u64>();
        let mut order: Vec<usize> = (0..exact.len()).collect();
        order.sort_by(|a, b| exact[*b].1.cmp(&exact[*a].1).then(a.cmp(b)));
        for index in order.into_iter().take(left as usize) {
            shares[index] += 1;
        }
        shares
    }

    /// The deploy file as TOML, e.g. after filling in addresses.
    pub fn to_toml(&self) -> String {
        toml_string(&self.deploy)
    }

    /// Why a running process cannot switch from this topology to `next`, if it
    /// cannot. A reload may change addresses, standbys, health, takeover, timeouts
    /// and limits; it may not move a slot, since a slot's data stays in the ledger of
    /// the cell that owned it (there is no slot migration yet), nor change what the
    /// ledgers already recorded (items' stock shares, backends, data directories).
    pub fn reload_problems(&self, next: &Topology) -> Vec<String> {
        let (now, then) = (&self.deploy, &next.deploy);
        let mut problems = Vec::new();
        let ids = |t: &Topology| t.cells.iter().map(|c| c.id.clone()).collect::<Vec<_>>();
        if ids(self) != ids(next) {
            problems.push(format!(
                "cells: {:?} would become {:?}; adding, removing or reordering cells moves slots",
                ids(self),
                ids(next)
            ));
        } else {
            let moved = (0..now.slots.min(then.slots))
                .filter(|&slot| self.placement.owner(slot) != next.placement.owner(slot))
                .count();
            if now.slots != then.slots || moved > 0 {
                problems.push(format!(
                    "placement: {moved} slots would move (weights, overrides, vnodes or slots changed)"
                ));
            }
            for (a, b) in self.cells.iter().zip(&next.cells) {
                if a.data_dir != b.data_dir {
                    problems.push(format!(
                        "cells.{}.data_dir: cannot change while running",
                        a.id
                    ));
                }
            }
        }
        if now.items != then.items {
            problems.push("items: stock shares are recorded in the ledgers once".to_owned());
        }
        if now.global_zone != then.global_zone {
            problems.push(
                "global_zone: cannot change while running (its lease loops start with the cell)"
                    .to_owned(),
            );
        }
        if now.ledger.backend != then.ledger.backend || now.name != then.name {
            problems.push("name, ledger.backend: cannot change while running".to_owned());
        }
        if now.epoch != then.epoch {
            problems.push("epoch: cannot change while running".to_owned());
        }
        problems
    }
}

fn toml_string(deploy: &Deploy) -> String {
    // Serializing our own plain structs cannot fail: no maps with non-string keys,
    // no values TOML lacks.
    toml::to_string_pretty(deploy).unwrap_or_else(|err| format!("# unserializable: {err}\n"))
}
