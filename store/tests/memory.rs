//! Memory accounting against the allocator: a counting global allocator measures what the
//! engine really holds, and `Store::memory_bytes` must stay within 15% of it after bulk
//! inserts, updates that move index entries, deletes, and index creation over existing data.

// The one place weft writes `unsafe`: implementing `GlobalAlloc` is an unsafe trait; every
// method forwards to `System` unchanged and only adds to a counter.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};

use weft_store::{IndexDef, Op, Scalar, Store};

struct Counting;

static LIVE_BYTES: AtomicIsize = AtomicIsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE_BYTES.fetch_add(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE_BYTES.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE_BYTES.fetch_add(new_size as isize - layout.size() as isize, Ordering::Relaxed);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn live() -> isize {
    LIVE_BYTES.load(Ordering::Relaxed)
}

fn key(i: u64) -> [u8; 16] {
    let h = i.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let mut k = [0u8; 16];
    k[..8].copy_from_slice(&h.to_be_bytes());
    k[8..].copy_from_slice(&i.to_le_bytes());
    k
}

fn assert_close(what: &str, accounted: usize, real: isize) {
    let real = real as f64;
    let err = (accounted as f64 - real).abs() / real;
    eprintln!("{what}: accounted {accounted}, allocator {real}, {:.1}% off", err * 100.0);
    assert!(err <= 0.15, "{what}: accounted {accounted} bytes, allocator holds {real} ({:.1}% off)", err * 100.0);
}

#[test]
fn accounting_tracks_the_allocator() {
    const N: u64 = 200_000;
    let value = vec![5u8; 100];
    let before = live();
    let mut s = Store::default();
    assert_eq!(s.create_table("t"), Ok(()));
    assert_eq!(s.create_index("t", IndexDef::ordered("by_a", "a")), Ok(()));
    assert_eq!(s.create_index("t", IndexDef::max_heap("top_b", "b")), Ok(()));
    for i in 0..N {
        let attrs = [("a", Scalar::I64((i % 1000) as i64)), ("b", Scalar::String(format!("s{i}").into()))];
        assert!(s.put("t", &key(i), &value, &attrs).is_ok());
    }
    assert_close("after inserts", s.memory_bytes(), live() - before);

    // Updates that move every record within both indexes, and grow values.
    let bigger = vec![6u8; 300];
    for i in 0..N / 2 {
        let attrs = [("a", Scalar::I64((i % 7) as i64)), ("b", Scalar::I64(i as i64))];
        assert!(s.put("t", &key(i), &bigger, &attrs).is_ok());
    }
    assert_close("after updates", s.memory_bytes(), live() - before);

    // Deletes in batches.
    for chunk in (0..N).step_by(3).collect::<Vec<_>>().chunks(1000) {
        let ops: Vec<Op> = chunk.iter().map(|i| Op::delete("t", key(*i).to_vec())).collect();
        assert!(s.apply(&ops).is_ok());
    }
    assert_close("after deletes", s.memory_bytes(), live() - before);

    // An index declared over existing data.
    assert_eq!(s.create_index("t", IndexDef::ordered("by_b", "b")), Ok(()));
    assert_close("after a late index", s.memory_bytes(), live() - before);

    // Accounting must fall back with the data.
    assert_eq!(s.drop_table("t"), Ok(()));
    assert_eq!(s.memory_bytes(), 0);
}
