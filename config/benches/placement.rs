//! Placement lookup, the router's per-request work before the proxying: user id to
//! slot (xxh3) and slot to cell (a table lookup). Run with
//! `cargo bench -p ldc-topology --bench placement`.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use ldc_topology::Topology;

/// A deploy file of `cells` equal cells on 4096 slots.
fn topology(cells: usize) -> Topology {
    let mut text = String::from("[[regions]]\nid = \"r\"\n");
    for i in 0..cells {
        text += &format!(
            "[[cells]]\nid = \"c{i}\"\nregion = \"r\"\nlisten = \"127.0.0.1:{}\"\nadmin = \"127.0.0.1:{}\"\n",
            10_000 + i,
            20_000 + i
        );
    }
    Topology::from_toml_str("bench.toml", &text).expect("valid deploy file")
}

fn lookup(c: &mut Criterion) {
    let users: Vec<String> = (0..100_000).map(|i| format!("user-{i:06}")).collect();
    let mut group = c.benchmark_group("route");
    group.throughput(Throughput::Elements(users.len() as u64));
    for cells in [3, 8, 64] {
        let topology = topology(cells);
        group.bench_with_input(
            BenchmarkId::new("cells", cells),
            &topology,
            |b, topology| {
                b.iter(|| {
                    users
                        .iter()
                        .map(|u| topology.route(std::hint::black_box(u)).1)
                        .sum::<usize>()
                })
            },
        );
    }
    group.finish();
}

criterion_group!(benches, lookup);
criterion_main!(benches);
