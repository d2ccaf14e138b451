fn main() {
    afl::fuzz!(|data: &[u8]| rust_vm_fuzz_harness::run_agent_frame(data));
}
