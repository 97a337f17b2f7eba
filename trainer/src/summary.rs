//! The per-layer parameter table printed by `vessel-train summary`.

use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::Tensor;

/// One parameter tensor: its path in the module tree, shape and element count.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParamRow {
    pub path: String,
    pub shape: Vec<usize>,
    pub count: usize,
}

#[derive(Default)]
struct Collector {
    path: Vec<String>,
    rows: Vec<ParamRow>,
}

impl ModuleVisitor for Collector {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.push(name.to_string());
    }
    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let shape = param.val().dims().to_vec();
        self.rows.push(ParamRow {
            path: self.path.join("."),
            count: shape.iter().product(),
            shape,
        });
    }
}

/// Every float parameter of `module`, in declaration order.
pub fn parameter_rows<M: Module>(module: &M) -> Vec<ParamRow> {
    let mut c = Collector::default();
    module.visit(&mut c);
    c.rows
}

/// A readable table: one row per parameter tensor, then the total.
pub fn format_table(rows: &[ParamRow]) -> String {
    let width = rows
        .iter()
        .map(|r| r.path.len())
        .max()
        .unwrap_or(10)
        .max(10);
    let mut out = format!("{:<width$}  {:<18} {:>10}\n", "parameter", "shape", "count");
    out.push_str(&format!("{}\n", "-".repeat(width + 31)));
    for r in rows {
        let shape = format!("{:?}", r.shape);
        out.push_str(&format!(
            "{:<width$}  {:<18} {:>10}\n",
            r.path, shape, r.count
        ));
    }
    let total: usize = rows.iter().map(|r| r.count).sum();
    out.push_str(&format!("{}\n", "-".repeat(width + 31)));
    out.push_str(&format!("{:<width$}  {:<18} {:>10}\n", "total", "", total));
    out
}
