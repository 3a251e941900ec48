//! Application state: values the builder receives once and processors read by type.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::sync::Arc;

/// A processor argument that receives the client's value of type `T`, given to
/// [`ClientBuilder::state`](crate::ClientBuilder::state) and cloned for each attempt.
///
/// Destructure it in the argument list: `State(pool): State<Pool>`. `T` is usually cheap to
/// clone, a pool or an `Arc`. A client whose builder did not receive a `T` fails to build, so
/// a processor never runs without its state.
///
/// ```
/// use std::sync::Arc;
///
/// use backlite::{State, Task, processor};
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Serialize, Deserialize, Task)]
/// #[queue(name = "welcome")]
/// struct Welcome { user: u64 }
///
/// #[derive(Clone)]
/// struct Mailer { from: Arc<str> }
///
/// #[processor]
/// async fn welcome(task: Welcome, State(mailer): State<Mailer>) -> std::io::Result<()> {
///     println!("mailing user {} from {}", task.user, mailer.from);
///     Ok(())
/// }
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct State<T>(pub T);

/// A state type a processor needs, as listed by [`Processor::states`](crate::Processor::states).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct StateType {
    id: TypeId,
    name: &'static str,
}

impl StateType {
    /// The state type `T`.
    pub fn of<T: Send + Sync + 'static>() -> Self {
        StateType {
            id: TypeId::of::<T>(),
            name: std::any::type_name::<T>(),
        }
    }

    /// The type's name, as `std::any::type_name` gives it.
    pub fn name(&self) -> &'static str {
        self.name
    }
}

/// The client's state values, one per type.
#[derive(Default)]
pub(crate) struct StateMap {
    values: HashMap<TypeId, (Arc<dyn Any + Send + Sync>, &'static str)>,
}

impl StateMap {
    /// Stores `value`; returns the type's name when a value of that type was already stored
    /// (the new one is then dropped, and the builder reports the mistake).
    pub(crate) fn insert<T: Send + Sync + 'static>(
        &mut self,
        value: T,
    ) -> Result<(), &'static str> {
        let ty = StateType::of::<T>();
        if self.values.contains_key(&ty.id) {
            return Err(ty.name);
        }
        self.values.insert(ty.id, (Arc::new(value), ty.name));
        Ok(())
    }

    pub(crate) fn get<T: Send + Sync + 'static>(&self) -> Option<&T> {
        self.values
            .get(&TypeId::of::<T>())
            .and_then(|(value, _)| value.downcast_ref())
    }

    pub(crate) fn contains(&self, ty: &StateType) -> bool {
        self.values.contains_key(&ty.id)
    }
}

impl std::fmt::Debug for StateMap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut names: Vec<_> = self.values.values().map(|(_, name)| *name).collect();
        names.sort_unstable();
        f.debug_set().entries(names).finish()
    }
}
