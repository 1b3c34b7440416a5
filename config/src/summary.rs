//! A serializable picture of a topology: what `/admin/topology` answers and what
//! `ldc check-config` prints.

use serde::Serialize;

use crate::topology::Topology;

#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub name: String,
    pub slots: u32,
    pub epoch: u64,
    pub regions: Vec<RegionSummary>,
    pub cells: Vec<CellSummary>,
    pub routers: Vec<RouterSummary>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RegionSummary {
    pub id: String,
    pub cells: Vec<String>,
    pub routers: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct CellSummary {
    pub id: String,
    pub region: String,
    pub listen: String,
    pub advertise: String,
    pub admin: String,
    pub peer: String,
    pub weight: u32,
    pub standby: Option<String>,
    /// Slots this cell owns under the placement.
    pub slots: u32,
    pub epoch: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct RouterSummary {
    pub id: String,
    pub region: String,
    pub listen: String,
    pub admin: String,
}

impl Topology {
    pub fn summary(&self) -> Summary {
        let placement = self.placement();
        let counts = self.slots_per_cell();
        let cells = self
            .cells()
            .iter()
            .zip(counts)
            .map(|(c, slots)| CellSummary {
                id: c.id.clone(),
                region: c.region.clone(),
                listen: c.listen.to_string(),
                advertise: c.advertise.to_string(),
                admin: c.admin.to_string(),
                peer: c.peer.to_string(),
                weight: c.weight,
                standby: c.standby.map(|s| self.cells()[s].id.clone()),
                slots,
                epoch: placement.epoch(),
            })
            .collect();
        let routers = self
            .routers()
            .iter()
            .map(|r| RouterSummary {
                id: r.id.clone(),
                region: r.region.clone(),
                listen: r.listen.to_string(),
                admin: r.admin.to_string(),
            })
            .collect();
        let regions = self
            .regions()
            .map(|region| RegionSummary {
                id: region.to_owned(),
                cells: self
                    .cells()
                    .iter()
                    .filter(|c| c.region == region)
                    .map(|c| c.id.clone())
                    .collect(),
                routers: self
                    .routers()
                    .iter()
                    .filter(|r| r.region == region)
                    .map(|r| r.id.clone())
                    .collect(),
            })
            .collect();
        Summary {
            name: self.deploy().name.clone(),
            slots: placement.slots(),
            epoch: placement.epoch(),
            regions,
            cells,
            routers,
        }
    }
}
