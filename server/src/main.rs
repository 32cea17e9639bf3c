use std::process::ExitCode;

/// Worker and blocking threads get this much stack (address space; committed as used). Query
/// execution recurses over expression trees up to `max_depth` deep, which the default 2 MiB
/// fits with little room; planning has its own, larger segment (`cohort_engine::depth`).
const THREAD_STACK_BYTES: usize = 8 * 1024 * 1024;

fn main() -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_stack_size(THREAD_STACK_BYTES)
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(cohort_server::cli::run()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {}", cohort_server::cli::report(&error));
            ExitCode::FAILURE
        }
    }
}
