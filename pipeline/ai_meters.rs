//! AI token meters: model, token class and service tier parsed out of meter / usage-type / SKU
//! strings by the patterns in `schemas/ai_token_meters.psv` (data, not code).

use std::sync::{Arc, OnceLock};

use regex::{Regex, RegexBuilder};

use crate::error::{Result, TallyError};
use crate::resources;

/// What a meter string says about tokens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenMeter {
    /// The model, as the provider spells it in the meter (e.g. `Claude4.6Sonnet`, `gpt-4o-mini-0718`).
    pub model: Option<String>,
    /// input, output, cached-read, cache-write, batch-input, batch-output.
    pub token_class: String,
    /// The service tier when the meter names one (Azure `glbl`, `regnl`, `dzone`).
    pub tier: Option<String>,
}

struct Rule {
    provider: String,
    pattern: Regex,
    token_class: String,
}

/// The parsing rules, loaded once.
pub struct Meters {
    rules: Vec<Rule>,
}

impl Meters {
    /// Parses the rules file.
    pub fn load() -> Result<Meters> {
        let path = "schemas/ai_token_meters.psv";
        let text = resources::load(path)?;
        let mut rules = Vec::new();
        for (i, line) in text.lines().enumerate() {
            if line.starts_with('#') || line.trim().is_empty() {
                continue;
            }
            // The pattern may itself contain `|`: the provider is the first field, the class the last.
            let split = line
                .split_once('|')
                .and_then(|(p, rest)| rest.rsplit_once('|').map(|(pat, c)| (p, pat, c)));
            let Some((provider, pattern, token_class)) = split else {
                return Err(TallyError::Internal(format!(
                    "{path}:{}: expected provider|pattern|token_class",
                    i + 1
                )));
            };
            let pattern = RegexBuilder::new(pattern)
                .case_insensitive(provider == "azure")
                .build()
                .map_err(|e| TallyError::Internal(format!("{path}:{}: {e}", i + 1)))?;
            rules.push(Rule {
                provider: provider.to_string(),
                pattern,
                token_class: token_class.to_string(),
            });
        }
        Ok(Meters { rules })
    }

    /// The shared rules (loaded on first use).
    pub fn shared() -> Result<Arc<Meters>> {
        static METERS: OnceLock<Arc<Meters>> = OnceLock::new();
        if let Some(m) = METERS.get() {
            return Ok(m.clone());
        }
        let m = Arc::new(Meters::load()?);
        Ok(METERS.get_or_init(|| m).clone())
    }

    /// Parses one meter string of a provider; `None` when no rule matches.
    pub fn parse(&self, provider: &str, meter: &str) -> Option<TokenMeter> {
        self.rules
            .iter()
            .filter(|r| r.provider == provider)
            .find_map(|r| {
                let c = r.pattern.captures(meter.trim())?;
                let tier = c
                    .name("tier")
                    .map(|t| match t.as_str().to_ascii_lowercase().as_str() {
                        "glbl" | "global" => "Global".to_string(),
                        "regnl" | "regional" => "Regional".to_string(),
                        "dzone" | "datazone" => "Data Zone".to_string(),
                        other => other.to_string(),
                    });
                Some(TokenMeter {
                    model: c.name("model").map(|m| m.as_str().trim().to_string()),
                    token_class: r.token_class.clone(),
                    tier,
                })
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(provider: &str, s: &str) -> Option<(Option<String>, String, Option<String>)> {
        Meters::load()
            .unwrap()
            .parse(provider, s)
            .map(|m| (m.model, m.token_class, m.tier))
    }

    #[test]
    fn the_meter_shapes_providers_bill_tokens_with() {
        assert_eq!(
            p("aws", "USE1-Claude4.6Sonnet-input-tokens"),
            Some((Some("Claude4.6Sonnet".into()), "input".into(), None))
        );
        assert_eq!(
            p("aws", "USE1-Claude4.6Sonnet-cache-read-input-token-count"),
            Some((Some("Claude4.6Sonnet".into()), "cached-read".into(), None))
        );
        assert_eq!(
            p("aws", "USE1-MP:USE1_InputTokenCount-Units"),
            Some((None, "input".into(), None))
        );
        assert_eq!(
            p("azure", "gpt-4o-mini-0718-Inp-glbl Tokens"),
            Some((
                Some("gpt-4o-mini-0718".into()),
                "input".into(),
                Some("Global".into())
            ))
        );
        assert_eq!(
            p("azure", "gpt 4o 0513 Output global Tokens"),
            Some((
                Some("gpt 4o 0513".into()),
                "output".into(),
                Some("Global".into())
            ))
        );
        assert_eq!(
            p("gcp", "Gemini 2.0 Flash Text Input - Predictions"),
            Some((Some("Gemini 2.0 Flash".into()), "input".into(), None))
        );
        assert_eq!(
            p("gcp", "Gemini 3 Flash Text Input Caching"),
            Some((Some("Gemini 3 Flash".into()), "cached-read".into(), None))
        );
    }

    #[test]
    fn unknown_meters_stay_unparsed() {
        assert_eq!(p("aws", "USE1-BoxUsage:t3.micro"), None);
        assert_eq!(
            p("gcp", "N1 Predefined Instance Core running in Americas"),
            None
        );
        assert_eq!(
            p("aws", "gpt-4o-mini-0718-Inp-glbl Tokens"),
            None,
            "rules are per provider"
        );
    }
}
