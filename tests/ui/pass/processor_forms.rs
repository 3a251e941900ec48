// The signatures `#[processor]` accepts. Each function also stays callable as written.

use backlite::{Context, Processor, State, StateType, Task, processor};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Task)]
#[queue(name = "resize")]
pub struct Resize {
    path: String,
}

#[derive(Serialize, Deserialize, Task)]
#[queue(name = "email")]
pub struct Email {
    to: String,
}

#[derive(Debug)]
pub struct MailError;

impl std::fmt::Display for MailError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("mail server down")
    }
}

impl std::error::Error for MailError {}

/// With the context, and the user's own error type.
#[processor]
async fn send_email(ctx: Context, task: Email) -> Result<(), MailError> {
    let _ = (ctx.attempt(), task.to);
    Ok(())
}

/// Without the context, with `anyhow`.
#[processor]
async fn resize(task: Resize) -> anyhow::Result<()> {
    anyhow::ensure!(!task.path.is_empty(), "no path");
    Ok(())
}

/// Destructuring patterns, a `backlite::`-qualified context.
#[processor]
pub async fn destructure(_: backlite::Context, Resize { path }: Resize) -> std::io::Result<()> {
    drop(path);
    Ok(())
}

/// String errors and boxed errors convert too.
#[processor]
pub(crate) async fn string_error(_task: Email) -> Result<(), String> {
    Err("no".to_owned())
}

#[processor]
async fn boxed_error(_task: Email) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    Ok(())
}

/// A function whose name is also the name of the generated code's variables.
#[processor]
async fn task(task: Resize) -> Result<(), std::fmt::Error> {
    drop(task);
    Ok(())
}

/// The task before the context.
#[processor]
async fn task_first(task: Email, ctx: Context) -> Result<(), MailError> {
    let _ = (task.to, ctx.attempt());
    Ok(())
}

#[derive(Clone)]
pub struct Pool;

#[derive(Clone)]
pub struct Settings;

/// State before and after the task, around the context, qualified or not.
#[processor]
async fn with_state(
    State(_pool): State<Pool>,
    ctx: Context,
    task: Email,
    settings: backlite::State<Settings>,
) -> Result<(), MailError> {
    let State(Settings) = settings;
    let _ = (ctx, task);
    Ok(())
}

mod jobs {
    use super::*;

    /// Attributes and docs stay on the function.
    #[processor]
    #[allow(clippy::unused_async)]
    pub async fn ctx(ctx: Context, task: Email) -> Result<(), MailError> {
        let _ = (ctx, task);
        Err(MailError)
    }
}

fn processes<P: Processor>() -> &'static str {
    <P::Task as Task>::CONFIG.name()
}

fn main() {
    assert_eq!(processes::<send_email>(), "email");
    assert_eq!(processes::<resize>(), "resize");
    assert_eq!(processes::<destructure>(), "resize");
    assert_eq!(processes::<string_error>(), "email");
    assert_eq!(processes::<boxed_error>(), "email");
    assert_eq!(processes::<task>(), "resize");
    assert_eq!(processes::<jobs::ctx>(), "email");
    assert_eq!(processes::<task_first>(), "email");
    assert_eq!(processes::<with_state>(), "email");

    // The state types a processor takes, in argument order; none without `State` arguments.
    assert_eq!(
        <with_state as Processor>::states(),
        [StateType::of::<Pool>(), StateType::of::<Settings>()]
    );
    assert!(<task_first as Processor>::states().is_empty());

    // The functions are plain async functions, callable directly.
    let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
    runtime.block_on(async {
        assert!(resize(Resize { path: "a.png".into() }).await.is_ok());
        assert!(resize(Resize { path: String::new() }).await.is_err());
        assert_eq!(string_error(Email { to: "x".into() }).await, Err("no".to_owned()));
        assert!(task(Resize { path: "a.png".into() }).await.is_ok());
    });
}
