//! The runtime of the bare build: what the C and standard libraries would give a program,
//! and nothing more. The kernel starts `_start` with argc, argv and the environment on the
//! stack; memory comes from mmap(2) in blocks handed out in order and never returned (the
//! process delivers one message and exits); a panic ends the process with the temporary
//! failure the MTA retries (exit 75); memcpy and friends, which the compiler calls, are
//! written here.
//!
//! Built only by scripts/build-release, with `-C panic=abort` and linked `-nostartfiles
//! -nostdlib -static-pie`: a static position-independent executable, which the kernel
//! loads at a random address (ASLR stays, against the exploitation of any memory bug with
//! addresses known in advance). With no dynamic loader to do it, [`relocate`] applies the
//! executable's own relocations before any other code runs, and then makes its RELRO part
//! read-only, as ld.so would.

#![allow(unsafe_code)] // reason: a program entry point, an allocator and memcpy; each block has a SAFETY note

#[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
compile_error!(
    "the bare build of cursus-deliver is for x86_64 Linux; build without --cfg cursus_bare"
);

extern crate alloc;

use alloc::vec::Vec;
use core::alloc::{GlobalAlloc, Layout};
use core::cell::Cell;

use cursus_front::sys;

/// The process's first instruction: relocates the executable where the kernel loaded it
/// ([`relocate`], with the address of its ELF header and of its dynamic section), then
/// passes the initial stack pointer to [`entry`]. Two calls from here, so no code that reads
/// relocated data can be moved before the relocation.
#[unsafe(naked)]
#[unsafe(no_mangle)]
unsafe extern "C" fn _start() -> ! {
    core::arch::naked_asm!(
        "xor ebp, ebp",
        "mov r12, rsp",
        "and rsp, -16",
        "lea rdi, [rip + __ehdr_start]",
        "lea rsi, [rip + _DYNAMIC]",
        "call {relocate}",
        "mov rdi, r12",
        "call {entry}",
        "ud2",
        relocate = sym relocate,
        entry = sym entry,
    )
}

/// `DT_*` tags and relocation types this executable can hold (the linker is asked for a
/// static PIE, whose only relocations are relative).
const DT_NULL: usize = 0;
const DT_RELA: usize = 7;
const DT_RELASZ: usize = 8;
const DT_RELRSZ: usize = 35;
const DT_RELR: usize = 36;
const R_X86_64_NONE: usize = 0;
const R_X86_64_RELATIVE: usize = 8;
const PT_GNU_RELRO: u32 = 0x6474_e552;
const PAGE: usize = 4096;

/// Applies the executable's relative relocations (RELA and RELR) for the load address
/// `base`, then makes the RELRO segment read-only. Runs before anything else, so it reads
/// no relocated data: only the ELF structures through raw pointers, no slices (a bounds
/// check would need a panic location), no statics. Any other relocation type ends the
/// process (exit 70): the executable was linked wrongly.
///
/// # Safety
/// `base` is the address of this executable's ELF header and `dynamic` of its dynamic
/// section, as the kernel loaded them; called once, first.
unsafe extern "C" fn relocate(base: usize, dynamic: *const usize) {
    let (mut rela, mut rela_size, mut relr, mut relr_size) = (0, 0, 0, 0);
    let mut d = dynamic;
    // SAFETY: the dynamic section is an array of (tag, value) pairs ending with DT_NULL.
    unsafe {
        while *d != DT_NULL {
            let value = *d.add(1);
            match *d {
                DT_RELA => rela = base + value,
                DT_RELASZ => rela_size = value,
                DT_RELR => relr = base + value,
                DT_RELRSZ => relr_size = value,
                _ => {}
            }
            d = d.add(2);
        }
    }
    let mut r = rela;
    while r < rela + rela_size {
        // SAFETY: Elf64_Rela entries (offset, info, addend) inside the RELA table, each
        // naming a word of this executable.
        unsafe {
            let (offset, info, addend) = (
                *(r as *const usize),
                *((r + 8) as *const usize),
                *((r + 16) as *const usize),
            );
            match info & 0xffff_ffff {
                R_X86_64_RELATIVE => *((base + offset) as *mut usize) = base + addend,
                R_X86_64_NONE => {}
                _ => sys::exit(70),
            }
        }
        r += 24;
    }
    // RELR: an address entry (even) relocates one word and sets the position; a bitmap
    // entry (odd) relocates, for each set bit n (from 1), the word n-1 after the position,
    // then moves it on 63 words.
    let mut at: *mut usize = core::ptr::null_mut();
    let mut e = relr;
    while e < relr + relr_size {
        // SAFETY: the RELR table's words, each naming words of this executable.
        unsafe {
            let entry = *(e as *const usize);
            if entry & 1 == 0 {
                at = (base + entry) as *mut usize;
                *at += base;
                at = at.add(1);
            } else {
                let mut bits = entry >> 1;
                let mut p = at;
                while bits != 0 {
                    if bits & 1 != 0 {
                        *p += base;
                    }
                    bits >>= 1;
                    p = p.add(1);
                }
                at = at.add(63);
            }
        }
        e += 8;
    }
    // SAFETY: the ELF header's program header table (e_phoff at 32, e_phentsize at 54,
    // e_phnum at 56); p_type at 0, p_vaddr at 16, p_memsz at 40 of each entry.
    unsafe {
        let phoff = *((base + 32) as *const u64) as usize;
        let phentsize = usize::from(*((base + 54) as *const u16));
        let phnum = usize::from(*((base + 56) as *const u16));
        let mut i = 0;
        while i < phnum {
            let ph = base + phoff + i * phentsize;
            if *(ph as *const u32) == PT_GNU_RELRO {
                let start = (base + *((ph + 16) as *const u64) as usize) & !(PAGE - 1);
                let end = (base
                    + *((ph + 16) as *const u64) as usize
                    + *((ph + 40) as *const u64) as usize)
                    & !(PAGE - 1);
                if end > start {
                    let _ = sys::protect_read_only(start, end - start);
                }
            }
            i += 1;
        }
    }
}

/// argc, then argc pointers and a NULL, then the environment's pointers and a NULL.
unsafe extern "C" fn entry(stack: *const usize) -> ! {
    // SAFETY: the kernel's initial stack layout (System V ABI, x86_64 supplement 3.4.1).
    let (argc, argv, envp) = unsafe {
        let argc = *stack;
        let argv = stack.add(1) as *const *const u8;
        (argc, argv, argv.add(argc + 1))
    };
    // SAFETY: argv has argc entries; the environment ends with a NULL.
    let args: Vec<&[u8]> = (0..argc).map(|i| unsafe { c_str(*argv.add(i)) }).collect();
    let mut env: Vec<&[u8]> = Vec::new();
    let mut i = 0;
    // SAFETY: as above.
    while let Some(p) = Some(unsafe { *envp.add(i) }).filter(|p| !p.is_null()) {
        // SAFETY: the kernel's NUL-terminated strings.
        env.push(unsafe { c_str(p) });
        i += 1;
    }
    let process = cursus_front::Process {
        argv: &args,
        env: &env,
    };
    // SAFETY: the kernel's own argv and environment arrays, unchanged.
    let hand_over = |path: &sys::CPath| unsafe { sys::execve(path, argv, envp) };
    sys::exit(cursus_front::run(&process, &hand_over))
}

/// The bytes of a NUL-terminated string.
///
/// # Safety
/// `p` points to a NUL-terminated string that lives as long as the process.
unsafe fn c_str(p: *const u8) -> &'static [u8] {
    // SAFETY: the caller guarantees the terminating NUL; n bytes come before it.
    unsafe { core::slice::from_raw_parts(p, strlen(p)) }
}

#[panic_handler]
fn panic(_: &core::panic::PanicInfo<'_>) -> ! {
    let _ = sys::write_all(sys::STDERR, b"4.3.0 internal error in cursus-deliver\n");
    sys::exit(75)
}

/// Memory in blocks from mmap(2), handed out in order. The last allocation can grow or be
/// given back in place (a Vec being filled, a buffer dropped); nothing is ever returned to
/// the system.
struct Bump {
    next: Cell<usize>,
    end: Cell<usize>,
    last: Cell<usize>,
}

// SAFETY: the bare front is single-threaded.
unsafe impl Sync for Bump {}

/// Smallest block asked of the kernel.
const BLOCK: usize = 1 << 20;

unsafe impl GlobalAlloc for Bump {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let start = (self.next.get() + layout.align() - 1) & !(layout.align() - 1);
        if self.next.get() == 0 || start + layout.size() > self.end.get() {
            let size = (layout.size() + layout.align()).max(BLOCK);
            let Some(base) = sys::map_anonymous(size) else {
                return core::ptr::null_mut();
            };
            self.next.set(base);
            self.end.set(base + size);
            // SAFETY: a fresh block large enough for the layout.
            return unsafe { self.alloc(layout) };
        }
        self.next.set(start + layout.size());
        self.last.set(start);
        start as *mut u8
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if ptr as usize == self.last.get() && self.next.get() == self.last.get() + layout.size() {
            self.next.set(self.last.get());
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if ptr as usize == self.last.get() && self.last.get() + new_size <= self.end.get() {
            self.next.set(self.last.get() + new_size);
            return ptr;
        }
        // SAFETY: the layout's alignment with the new size.
        let new =
            unsafe { self.alloc(Layout::from_size_align_unchecked(new_size, layout.align())) };
        if !new.is_null() {
            // SAFETY: both blocks hold at least min(old, new) bytes and do not overlap.
            unsafe { memcpy(new, ptr, layout.size().min(new_size)) };
        }
        new
    }
}

#[global_allocator]
static ALLOCATOR: Bump = Bump {
    next: Cell::new(0),
    end: Cell::new(0),
    last: Cell::new(0),
};

// What the compiler calls for copies, fills and comparisons. `rep movsb`/`rep stosb` are
// what glibc uses on current x86_64 for these sizes too; no loop the compiler could turn
// back into a memcpy call.

#[unsafe(no_mangle)]
unsafe extern "C" fn memcpy(dest: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    // SAFETY: the caller's memcpy contract: n bytes valid at both, not overlapping.
    unsafe {
        core::arch::asm!("rep movsb", inout("rcx") n => _, inout("rdi") dest => _,
            inout("rsi") src => _, options(nostack, preserves_flags));
    }
    dest
}

#[unsafe(no_mangle)]
unsafe extern "C" fn memmove(dest: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    if (dest as usize).wrapping_sub(src as usize) >= n {
        // Forwards is safe: dest is below src, or past its end.
        // SAFETY: n bytes valid at both.
        return unsafe { memcpy(dest, src, n) };
    }
    // SAFETY: n bytes valid at both; backwards with the direction flag, restored after.
    unsafe {
        core::arch::asm!("std", "rep movsb", "cld", inout("rcx") n => _,
            inout("rdi") dest.add(n).wrapping_sub(1) => _,
            inout("rsi") src.add(n).wrapping_sub(1) => _, options(nostack));
    }
    dest
}

#[unsafe(no_mangle)]
unsafe extern "C" fn memset(dest: *mut u8, c: i32, n: usize) -> *mut u8 {
    // SAFETY: n bytes valid at dest.
    unsafe {
        core::arch::asm!("rep stosb", inout("rcx") n => _, inout("rdi") dest => _,
            in("al") c as u8, options(nostack, preserves_flags));
    }
    dest
}

#[unsafe(no_mangle)]
unsafe extern "C" fn strlen(s: *const u8) -> usize {
    let left: usize;
    // SAFETY: the caller's strlen contract: a NUL-terminated string at s.
    unsafe {
        core::arch::asm!("repne scasb", inout("rcx") usize::MAX => left,
            inout("rdi") s => _, in("al") 0u8, options(nostack, readonly));
    }
    // rcx counted down once per byte scanned, the NUL included.
    !left - 1
}

#[unsafe(no_mangle)]
unsafe extern "C" fn memcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    for i in 0..n {
        // SAFETY: n bytes valid at both.
        let (x, y) = unsafe { (*a.add(i), *b.add(i)) };
        if x != y {
            return i32::from(x) - i32::from(y);
        }
    }
    0
}

#[unsafe(no_mangle)]
unsafe extern "C" fn bcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    // SAFETY: the same contract.
    unsafe { memcmp(a, b, n) }
}

/// The standard library's precompiled `alloc` refers to the unwinder; with panic=abort it
/// is never reached.
#[unsafe(no_mangle)]
extern "C" fn _Unwind_Resume() -> ! {
    sys::exit(75)
}

#[unsafe(no_mangle)]
extern "C" fn rust_eh_personality() {}
