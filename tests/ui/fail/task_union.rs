use backlite::Task;

#[derive(Task)]
#[queue(name = "bits")]
union Bits {
    int: u32,
    float: f32,
}

fn main() {}
