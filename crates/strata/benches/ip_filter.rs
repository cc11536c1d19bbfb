//! What an `ip_filter` costs per request, and its lookup against a linear scan of the same blocks.
//!
//! | case | what one iteration does |
//! | --- | --- |
//! | `lookup/ranges/N` | `IpFilter::allows` with N allowed blocks (merged into sorted ranges, binary search) |
//! | `lookup/linear/N` | `Cidr::contains` over the same N blocks in turn, as a plain list would |
//! | `layer/empty_stack` | one request (with `ConnectionInfo`) through an empty stack to a 200 endpoint |
//! | `layer/ip_filter` | the same request through an `ip_filter` of 1000 allowed blocks, the client in the last |
//!
//! The address looked up is in none of the blocks but the last one, the worst case of a scan.
//!
//! Run with `cargo bench -p strata-http --bench ip_filter`.

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};

use criterion::Criterion;
use http::StatusCode;
use strata::http::client_ip::Cidr;
use strata::http::{Body, ConnectionInfo, Request, Stack, response};
use strata::middleware::IpFilter;

/// `n` disjoint /24 blocks under 10.0.0.0/8, then 192.0.2.0/24 last.
fn blocks(n: u32) -> Vec<Cidr> {
    let mut blocks: Vec<Cidr> =
        (0..n - 1).map(|i| Cidr::parse(&format!("{}/24", Ipv4Addr::from(0x0A00_0000 | (i << 8)))).unwrap()).collect();
    blocks.push(Cidr::parse("192.0.2.0/24").unwrap());
    blocks
}

const CLIENT: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7));

fn lookup(c: &mut Criterion) {
    for n in [1u32, 10, 1000] {
        let blocks = blocks(n);
        let filter = IpFilter::builder().allow_cidrs(blocks.iter().copied()).build().unwrap();
        assert!(filter.allows(CLIENT));
        c.bench_function(&format!("ip_filter/lookup/ranges/{n}"), |b| b.iter(|| filter.allows(black_box(CLIENT))));
        c.bench_function(&format!("ip_filter/lookup/linear/{n}"), |b| {
            b.iter(|| blocks.iter().any(|block| block.contains(black_box(CLIENT))))
        });
    }
}

fn layer(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let endpoint = |_req: Request| async { response::text(StatusCode::OK, "ok") };
    let request = || {
        let mut req = Request::new(Body::default());
        req.extensions_mut()
            .insert(ConnectionInfo::new("192.0.2.7:40000".parse().unwrap(), "127.0.0.1:8080".parse().unwrap()));
        req
    };
    let empty = Stack::new().serve(endpoint);
    c.bench_function("ip_filter/layer/empty_stack", |b| b.iter(|| rt.block_on(empty.call(request()))));
    let filter = IpFilter::builder().allow_cidrs(blocks(1000)).build().unwrap();
    let filtered = Stack::new().with(filter).serve(endpoint);
    assert_eq!(rt.block_on(filtered.call(request())).status(), StatusCode::OK, "the client passes");
    c.bench_function("ip_filter/layer/ip_filter", |b| b.iter(|| rt.block_on(filtered.call(request()))));
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    lookup(&mut c);
    layer(&mut c);
    c.final_summary();
}
