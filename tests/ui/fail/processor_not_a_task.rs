use backlite::processor;

struct NotATask {
    path: String,
}

#[processor]
async fn resize(task: NotATask) -> Result<(), std::io::Error> {
    drop(task.path);
    Ok(())
}

#[processor]
async fn borrowed(task: &'static str) -> Result<(), std::io::Error> {
    drop(task);
    Ok(())
}

fn main() {}
