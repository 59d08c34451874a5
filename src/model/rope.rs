//! Rotary position embeddings (Su et al., 2021, "RoFormer"), in the "rotate half" pairing
//! `transformers` uses for Llama: dimension i rotates with dimension i + head_dim/2.
//! Frequency schedules: default, `linear` (positions / factor) and `llama3` (Llama 3.1's
//! wavelength-banded scaling), as `modeling_rope_utils.py` computes them.

use anyhow::Result;
use burn::prelude::*;
use serde_json::{Map, Value};

use crate::bad_input;

/// How inverse frequencies are scaled for long contexts.
#[derive(Debug, Clone, PartialEq)]
pub enum RopeScaling {
    None,
    Linear {
        factor: f64,
    },
    Llama3 {
        factor: f64,
        low_freq_factor: f64,
        high_freq_factor: f64,
        original_max_position_embeddings: f64,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct RopeConfig {
    pub theta: f64,
    pub scaling: RopeScaling,
}

impl RopeConfig {
    /// Reads both generations of `config.json`: 4.x's top-level `rope_theta` + `rope_scaling`
    /// and 5.x's `rope_parameters: {rope_theta, rope_type, …}`.
    pub fn from_hf(json: &Map<String, Value>, default_theta: f64) -> Result<Self> {
        let empty = Map::new();
        let params = json.get("rope_parameters").and_then(Value::as_object);
        let legacy = json.get("rope_scaling").and_then(Value::as_object);
        let theta = params
            .and_then(|p| p.get("rope_theta"))
            .or_else(|| json.get("rope_theta"))
            .and_then(Value::as_f64)
            .unwrap_or(default_theta);
        let scaling = params.or(legacy).unwrap_or(&empty);
        let kind = scaling
            .get("rope_type")
            .or_else(|| scaling.get("type"))
            .and_then(Value::as_str)
            .unwrap_or("default");
        let number = |key: &str| -> Result<f64> {
            scaling
                .get(key)
                .and_then(Value::as_f64)
                .ok_or_else(|| bad_input!("rope scaling `{kind}` needs a numeric `{key}`"))
        };
        let scaling = match kind {
            "default" => RopeScaling::None,
            "linear" => RopeScaling::Linear { factor: number("factor")? },
            "llama3" => RopeScaling::Llama3 {
                factor: number("factor")?,
                low_freq_factor: number("low_freq_factor")?,
                high_freq_factor: number("high_freq_factor")?,
                original_max_position_embeddings: number("original_max_position_embeddings")?,
            },
            other => {
                return Err(bad_input!(
                    "unsupported rope scaling type `{other}` (supported: default, linear, llama3)"
                ));
            }
        };
        Ok(Self { theta, scaling })
    }

    /// The 5.x `rope_parameters` object, as the pinned `transformers` writes it.
    pub fn to_hf(&self) -> Value {
        let mut params = serde_json::json!({ "rope_theta": self.theta });
        let fields = match &self.scaling {
            RopeScaling::None => serde_json::json!({ "rope_type": "default" }),
            RopeScaling::Linear { factor } => {
                serde_json::json!({ "rope_type": "linear", "factor": factor })
            }
            RopeScaling::Llama3 {
                factor,
                low_freq_factor,
                high_freq_factor,
                original_max_position_embeddings,
            } => serde_json::json!({
                "rope_type": "llama3", "factor": factor, "low_freq_factor": low_freq_factor,
                "high_freq_factor": high_freq_factor,
                "original_max_position_embeddings": *original_max_position_embeddings as u64,
            }),
        };
        params.as_object_mut().expect("object").extend(fields.as_object().expect("object").clone());
        params
    }

    /// Inverse frequencies for a head of `head_dim` (one per rotated pair).
    pub fn inverse_frequencies(&self, head_dim: usize) -> Vec<f32> {
        let base: Vec<f64> = (0..head_dim / 2)
            .map(|i| 1.0 / self.theta.powf((2 * i) as f64 / head_dim as f64))
            .collect();
        let scaled = base.into_iter().map(|f| match self.scaling {
            RopeScaling::None => f,
            RopeScaling::Linear { factor } => f / factor,
            RopeScaling::Llama3 {
                factor,
                low_freq_factor,
                high_freq_factor,
                original_max_position_embeddings: old,
            } => {
                let wavelen = 2.0 * std::f64::consts::PI / f;
                let (low_wavelen, high_wavelen) = (old / low_freq_factor, old / high_freq_factor);
                if wavelen < high_wavelen {
                    f // high frequencies: unchanged
                } else if wavelen > low_wavelen {
                    f / factor // low frequencies: interpolated
                } else {
                    let smooth =
                        (old / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor);
                    (1.0 - smooth) * f / factor + smooth * f
                }
            }
        });
        scaled.map(|f| f as f32).collect()
    }
}

/// cos and sin tables `[B, 1, T, hd]` for a batch's positions, computed once per forward and
/// shared by every layer.
#[derive(Debug, Clone)]
pub struct RopeTables {
    cos: Tensor<4>,
    sin: Tensor<4>,
}

impl RopeTables {
    pub fn new(inverse_frequencies: &[f32], positions: Tensor<2, Int>) -> Self {
        let [b, t] = positions.dims();
        let device = positions.device();
        let half = inverse_frequencies.len();
        let inv = Tensor::<1>::from_data(inverse_frequencies, &device).reshape([1, 1, half]);
        let angles = positions.float().reshape([b, t, 1]) * inv; // [B, T, hd/2]
        let angles = Tensor::cat(vec![angles.clone(), angles], 2).reshape([b, 1, t, 2 * half]); // [B, 1, T, hd]
        Self { cos: angles.clone().cos(), sin: angles.sin() }
    }

    /// The tables of the positions `from..T` only.
    pub fn from_position(&self, from: usize) -> Self {
        if from == 0 {
            return self.clone();
        }
        let rows = |x: &Tensor<4>| x.clone().slice(s![.., .., from..]);
        Self { cos: rows(&self.cos), sin: rows(&self.sin) }
    }

    /// The cos and sin tables `[B, 1, T, hd]`.
    pub fn tables(self) -> [Tensor<4>; 2] {
        [self.cos, self.sin]
    }

    /// Rotates x `[B, H, T, hd]`: x·cos + rotate_half(x)·sin.
    pub fn apply(&self, x: Tensor<4>) -> Tensor<4> {
        let [b, h, t, hd] = x.dims();
        let half = hd / 2;
        let first = x.clone().slice(s![.., .., .., 0..half]);
        let second = x.clone().slice(s![.., .., .., half..hd]);
        let rotated = Tensor::cat(vec![-second, first], 3); // rotate_half
        let cos = self.cos.clone().expand([b, h, t, hd]);
        let sin = self.sin.clone().expand([b, h, t, hd]);
        x * cos + rotated * sin
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn config(json: Value) -> RopeConfig {
        RopeConfig::from_hf(json.as_object().unwrap(), 10000.0).unwrap()
    }

    #[test]
    fn reads_both_config_generations_alike() {
        let v4 = config(
            json!({"rope_theta": 500000.0, "rope_scaling": {"rope_type": "linear", "factor": 2.0}}),
        );
        let v5 = config(
            json!({"rope_parameters": {"rope_theta": 500000.0, "rope_type": "linear", "factor": 2.0}}),
        );
        assert_eq!(v4, v5);
        assert_eq!(
            v4,
            RopeConfig { theta: 500000.0, scaling: RopeScaling::Linear { factor: 2.0 } }
        );
        let old_key = config(json!({"rope_scaling": {"type": "linear", "factor": 4.0}}));
        assert_eq!(old_key.scaling, RopeScaling::Linear { factor: 4.0 });
        assert_eq!(config(json!({})).theta, 10000.0);
    }

    #[test]
    fn unknown_scaling_type_is_named() {
        let err = RopeConfig::from_hf(
            json!({"rope_scaling": {"rope_type": "yarn", "factor": 2.0}}).as_object().unwrap(),
            1e4,
        );
        assert!(format!("{:#}", err.unwrap_err()).contains("unsupported rope scaling type `yarn`"));
    }

    #[test]
    fn llama3_frequencies_match_transformers() {
        // transformers 5.23, ROPE_INIT_FUNCTIONS["llama3"] for head_dim 16, theta 500000,
        // factor 8, low 1, high 4, original 256: unchanged, smoothed and divided bands.
        let rope = config(
            json!({"rope_parameters": {"rope_theta": 500000.0, "rope_type": "llama3", "factor": 8.0,
            "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 256}}),
        );
        let expected = [
            1.0,
            0.19392276,
            0.010538231,
            0.00091158313,
            0.00017677668,
            3.4281024e-05,
            6.6478697e-06,
            1.2891732e-06,
        ];
        for (ours, theirs) in rope.inverse_frequencies(16).iter().zip(expected) {
            assert!((ours - theirs).abs() <= 1e-6 * theirs, "{ours} vs {theirs}");
        }
    }
}
