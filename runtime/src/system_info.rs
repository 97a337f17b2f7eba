//! What a benchmark records about the machine it ran on: board, CPU, temperature, clock,
//! peak RSS — read from `/proc` and `/sys` where they exist (Linux), absent elsewhere.

use serde::Serialize;

#[derive(Clone, Debug, Default, Serialize)]
pub struct SystemInfo {
    /// Board model (device tree), e.g. "Raspberry Pi 4 Model B Rev 1.4".
    pub board: Option<String>,
    pub cpu: Option<String>,
    /// The CPU's SIMD features that choose tract's kernels (AVX2, AVX-512, VNNI, AMX; NEON
    /// dot product, i8mm, SVE): two boards with one CPU name can differ here.
    pub cpu_features: Vec<&'static str>,
    /// tract's `TRACT_CPU_ISA` override when set (features taken out of its kernel choice).
    pub tract_cpu_isa: Option<String>,
    pub cores: usize,
    pub arch: &'static str,
    pub temperature_c: Option<f64>,
    pub clock_mhz: Option<f64>,
}

fn read(path: &str) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| {
            s.trim_matches(|c: char| c.is_whitespace() || c == '\0')
                .to_string()
        })
        .filter(|s| !s.is_empty())
}

/// The value of the first `key : value` line of `/proc/cpuinfo` (every core lists the same).
fn cpuinfo_field<'a>(info: &'a str, key: &str) -> Option<&'a str> {
    info.lines()
        .find(|l| l.split(':').next().is_some_and(|k| k.trim() == key))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim())
}

fn cpu_name(info: &str) -> Option<String> {
    let field = |key: &str| cpuinfo_field(info, key).map(str::to_string);
    // x86: "model name"; ARM: implementer / part numbers (0x41/0xd08 = Cortex-A72 …).
    field("model name").or_else(|| {
        let part = field("CPU part")?;
        let name = match part.as_str() {
            "0xd03" => "Cortex-A53",
            "0xd08" => "Cortex-A72",
            "0xd0b" => "Cortex-A76",
            _ => "ARM",
        };
        Some(format!("{name} (CPU part {part})"))
    })
}

/// The features that matter to tract's kernels, as `/proc/cpuinfo` names them.
const KERNEL_FEATURES: &[&str] = &[
    "avx2",
    "fma",
    "avx512f",
    "avx512_vnni",
    "avx_vnni",
    "amx_int8",
    "asimd",
    "asimddp",
    "i8mm",
    "sve",
];

fn cpu_features(info: &str) -> Vec<&'static str> {
    // x86: "flags"; ARM: "Features".
    let listed: Vec<&str> = cpuinfo_field(info, "flags")
        .or_else(|| cpuinfo_field(info, "Features"))
        .map(|v| v.split_whitespace().collect())
        .unwrap_or_default();
    KERNEL_FEATURES
        .iter()
        .copied()
        .filter(|f| listed.contains(f))
        .collect()
}

/// The x86 features behind tract's fast int8 matmul kernels, as `/proc/cpuinfo` and as
/// `TRACT_CPU_ISA` name them.
const X86_INT8_DOT_PRODUCT: &[(&str, &str)] = &[
    ("avx512_vnni", "avx512vnni"),
    ("avx_vnni", "avxvnni"),
    ("amx_int8", "amx-int8"),
];

impl SystemInfo {
    /// True on x86 when tract has no int8 dot-product kernel to use (no VNNI, no AMX, or
    /// all of them taken out by `TRACT_CPU_ISA`): its integer matmul then makes an int8
    /// model many times slower than the same model in f32 (docs/performance.md). ARM
    /// boards run int8 through NEON kernels either way.
    pub fn int8_is_slow(&self) -> bool {
        if self.arch != "x86_64" {
            return false;
        }
        let removed = |tract_name: &str| {
            self.tract_cpu_isa.as_deref().is_some_and(|isa| {
                isa.split(',')
                    .any(|f| f.trim().strip_prefix('-') == Some(tract_name))
            })
        };
        !X86_INT8_DOT_PRODUCT
            .iter()
            .any(|(cpuinfo_name, tract_name)| {
                self.cpu_features.contains(cpuinfo_name) && !removed(tract_name)
            })
    }

    pub fn read() -> Self {
        let cpuinfo = read("/proc/cpuinfo").unwrap_or_default();
        Self {
            board: read("/proc/device-tree/model")
                .or_else(|| read("/sys/class/dmi/id/product_name")),
            cpu: cpu_name(&cpuinfo),
            cpu_features: cpu_features(&cpuinfo),
            tract_cpu_isa: std::env::var("TRACT_CPU_ISA").ok(),
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            arch: std::env::consts::ARCH,
            temperature_c: read("/sys/class/thermal/thermal_zone0/temp")
                .and_then(|t| t.parse::<f64>().ok())
                .map(|m| m / 1000.0),
            clock_mhz: read("/sys/devices/system/cpu/cpu0/cpufreq/scaling_cur_freq")
                .and_then(|t| t.parse::<f64>().ok())
                .map(|khz| khz / 1000.0),
        }
    }
}

/// The process's peak resident set size (Linux `VmHWM`), in MB.
pub fn peak_rss_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// Page faults this process has taken so far (minor ones: pages mapped fresh, each zeroed
/// by the kernel), the cost of memory that is given back and taken again.
pub fn page_faults() -> Option<u64> {
    #[cfg(unix)]
    {
        // SAFETY: getrusage writes one rusage struct into the zeroed one we own.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
        (rc == 0).then_some(usage.ru_minflt as u64)
    }
    #[cfg(not(unix))]
    {
        None
    }
}

/// CPU time this process has used so far, in seconds. Unlike wall time it does not grow
/// when other programs share the cores, so benchmark variants compare fairly on a busy
/// machine (with one thread it is the frame's own cost).
pub fn process_cpu_seconds() -> Option<f64> {
    #[cfg(unix)]
    {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: clock_gettime writes one timespec into the struct we own.
        let rc = unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
        (rc == 0).then_some(ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9)
    }
    #[cfg(not(unix))]
    {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn machine(arch: &'static str, features: &[&'static str], isa: Option<&str>) -> SystemInfo {
        SystemInfo {
            arch,
            cpu_features: features.to_vec(),
            tract_cpu_isa: isa.map(str::to_string),
            ..SystemInfo::default()
        }
    }

    #[test]
    fn int8_is_slow_on_x86_without_an_int8_dot_product() {
        assert!(machine("x86_64", &["avx2", "fma"], None).int8_is_slow());
        assert!(!machine("x86_64", &["avx2", "fma", "avx_vnni"], None).int8_is_slow());
        assert!(!machine("x86_64", &["avx512f", "avx512_vnni"], None).int8_is_slow());
        assert!(!machine("x86_64", &["avx2", "amx_int8"], None).int8_is_slow());
        // Taken out of tract's choice: as if absent.
        let all_out = Some("-avx512f,-avx512vnni,-avxvnni,-amx-int8");
        assert!(
            machine("x86_64", &["avx512_vnni", "avx_vnni", "amx_int8"], all_out).int8_is_slow()
        );
        let one_left = Some("-avx512vnni,-avxvnni");
        assert!(
            !machine("x86_64", &["avx512_vnni", "avx_vnni", "amx_int8"], one_left).int8_is_slow()
        );
        // ARM runs int8 through NEON whatever its features.
        assert!(!machine("aarch64", &["asimd"], None).int8_is_slow());
    }

    #[test]
    fn features_are_read_from_cpuinfo() {
        let x86 = "processor\t: 0\nmodel name\t: Some CPU\nflags\t\t: fpu avx2 fma avx_vnni\n";
        assert_eq!(cpu_features(x86), vec!["avx2", "fma", "avx_vnni"]);
        assert_eq!(cpu_name(x86).as_deref(), Some("Some CPU"));
        let arm = "processor\t: 0\nFeatures\t: fp asimd asimddp\nCPU part\t: 0xd0b\n";
        assert_eq!(cpu_features(arm), vec!["asimd", "asimddp"]);
        assert_eq!(
            cpu_name(arm).as_deref(),
            Some("Cortex-A76 (CPU part 0xd0b)")
        );
    }
}
