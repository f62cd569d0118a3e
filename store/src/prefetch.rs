//! Software prefetch hints: the only `unsafe` in the engine.
//!
//! Bulk passes over records (index builds, heap sifting) are bound by cache misses whose
//! addresses are known several steps early; these hints start the loads then. A prefetch
//! is architecturally a no-op: it never faults, never reads into a register and never
//! changes memory, whatever address it is given, so the pointers here may dangle or lie
//! past an allocation's end. On targets other than x86_64 the hints compile to nothing.

use std::sync::Arc;

/// Starts loading the cache line at `p` for reading.
#[inline(always)]
#[allow(unsafe_code)]
pub(crate) fn read<T>(p: *const T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: PREFETCHT0 is a hint that cannot fault or touch memory (module docs); SSE
    // is part of the x86_64 baseline.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p.cast());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// Starts loading the cache line at `p` in exclusive state, for a store that follows.
#[inline(always)]
#[allow(unsafe_code)]
pub(crate) fn write<T>(p: *const T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: PREFETCHW is a hint like PREFETCHT0 (module docs); CPUs without it treat
    // the encoding as a no-op.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_ET0 }>(p.cast());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// Starts loading every line of `len` bytes at `p` (meant for a few lines). Objects are
/// not line-aligned, so the last byte gets its own hint: a 64-byte object often
/// straddles two lines.
#[inline(always)]
pub(crate) fn span<T>(p: *const T, len: usize) {
    const LINE: usize = 64;
    let p = p.cast::<u8>();
    for offset in (0..len).step_by(LINE) {
        read(p.wrapping_add(offset));
    }
    read(p.wrapping_add(len.saturating_sub(1)));
}

/// Starts loading an `Arc`'s reference counts and the value behind them, which a clone
/// (the counts) and a read (the value) are about to touch.
#[inline(always)]
pub(crate) fn arc<T>(a: &Arc<T>) {
    const COUNTS: usize = 2 * size_of::<usize>();
    span(Arc::as_ptr(a).cast::<u8>().wrapping_sub(COUNTS), COUNTS + size_of::<T>());
}

/// Yields `items` unchanged while running two copies of the iterator ahead of it:
/// `far` is called on the item `far_by` places ahead and `near` on the item `near_by`
/// places ahead. A pass over records scattered on the heap uses `far` to start loading a
/// record and `near`, once that has arrived, to start loading what the record points to;
/// the misses of many records then overlap instead of following one another.
#[inline]
pub(crate) fn ahead<'a, T: 'a, I>(
    items: I,
    far_by: usize,
    far: impl Fn(&T),
    near_by: usize,
    near: impl Fn(&T),
) -> impl Iterator<Item = &'a T>
where
    I: Iterator<Item = &'a T> + Clone,
{
    let mut far_items = items.clone().skip(far_by);
    let mut near_items = items.clone().skip(near_by);
    items.inspect(move |_| {
        if let Some(f) = far_items.next() {
            far(f);
        }
        if let Some(n) = near_items.next() {
            near(n);
        }
    })
}
