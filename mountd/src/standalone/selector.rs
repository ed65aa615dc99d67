//! Label selectors (a claim's `selector`) and node selectors (a PV's `nodeAffinity`), matched as
//! Kubernetes matches them.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{NodeSelectorRequirement, VolumeNodeAffinity};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

pub type Labels = BTreeMap<String, String>;

/// An empty selector matches everything; `matchLabels` and every expression must hold.
pub fn label_selector_matches(selector: &LabelSelector, labels: &Labels) -> Result<bool, String> {
    let by_labels = selector.match_labels.iter().flatten().all(|(k, v)| labels.get(k) == Some(v));
    let mut all = by_labels;
    for e in selector.match_expressions.iter().flatten() {
        all &= requirement(&e.key, &e.operator, e.values.as_deref().unwrap_or(&[]), labels)?;
    }
    Ok(all)
}

/// A PV without node affinity is reachable from every node; with it, one term must hold.
pub fn node_affinity_matches(
    affinity: Option<&VolumeNodeAffinity>,
    node_name: &str,
    labels: &Labels,
) -> Result<bool, String> {
    let Some(terms) = affinity.and_then(|a| a.required.as_ref()).map(|r| &r.node_selector_terms) else {
        return Ok(true);
    };
    let mut fields = Labels::new();
    fields.insert("metadata.name".into(), node_name.into());
    for term in terms {
        let exprs = term.match_expressions.iter().flatten().map(|e| (e, labels));
        let field_exprs = term.match_fields.iter().flatten().map(|e| (e, &fields));
        let mut holds = term.match_expressions.as_ref().is_some_and(|v| !v.is_empty())
            || term.match_fields.as_ref().is_some_and(|v| !v.is_empty());
        for (e, against) in exprs.chain(field_exprs) {
            holds &= node_requirement(e, against)?;
        }
        if holds {
            return Ok(true);
        }
    }
    Ok(false)
}

fn node_requirement(e: &NodeSelectorRequirement, labels: &Labels) -> Result<bool, String> {
    let values = e.values.as_deref().unwrap_or(&[]);
    match e.operator.as_str() {
        "Gt" | "Lt" => {
            let bad = || format!("nodeAffinity: {} {} needs one integer value", e.key, e.operator);
            let [value] = values else { return Err(bad()) };
            let limit: i64 = value.parse().map_err(|_| bad())?;
            Ok(labels.get(&e.key).and_then(|v| v.parse::<i64>().ok()).is_some_and(|v| {
                if e.operator == "Gt" {
                    v > limit
                } else {
                    v < limit
                }
            }))
        }
        op => requirement(&e.key, op, values, labels),
    }
}

fn requirement(key: &str, operator: &str, values: &[String], labels: &Labels) -> Result<bool, String> {
    let value = labels.get(key);
    match operator {
        "In" => Ok(value.is_some_and(|v| values.contains(v))),
        "NotIn" => Ok(value.is_none_or(|v| !values.contains(v))),
        "Exists" => Ok(value.is_some()),
        "DoesNotExist" => Ok(value.is_none()),
        other => Err(format!("selector operator {other:?} is not valid (In, NotIn, Exists, DoesNotExist)")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{NodeSelector, NodeSelectorTerm};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn expr(key: &str, op: &str, values: &[&str]) -> LabelSelectorRequirement {
        LabelSelectorRequirement {
            key: key.into(),
            operator: op.into(),
            values: Some(values.iter().map(|v| v.to_string()).collect()),
        }
    }

    #[test]
    fn label_selectors() {
        let pv = labels(&[("tier", "fast"), ("zone", "a")]);
        let sel = |ml: &[(&str, &str)], exprs: Vec<LabelSelectorRequirement>| LabelSelector {
            match_labels: Some(labels(ml)),
            match_expressions: Some(exprs),
        };
        assert!(label_selector_matches(&LabelSelector::default(), &pv).unwrap());
        assert!(label_selector_matches(&sel(&[("tier", "fast")], vec![]), &pv).unwrap());
        assert!(!label_selector_matches(&sel(&[("tier", "slow")], vec![]), &pv).unwrap());
        assert!(label_selector_matches(&sel(&[], vec![expr("zone", "In", &["a", "b"])]), &pv).unwrap());
        assert!(!label_selector_matches(&sel(&[], vec![expr("zone", "NotIn", &["a"])]), &pv).unwrap());
        assert!(label_selector_matches(&sel(&[], vec![expr("gpu", "DoesNotExist", &[])]), &pv).unwrap());
        assert!(!label_selector_matches(&sel(&[], vec![expr("gpu", "Exists", &[])]), &pv).unwrap());
        assert!(label_selector_matches(&sel(&[], vec![expr("gpu", "Near", &[])]), &pv).is_err());
    }

    #[test]
    fn node_affinity_terms_are_ored_expressions_anded() {
        let node = labels(&[("kubernetes.io/hostname", "n1"), ("disks", "3")]);
        let term = |exprs: &[(&str, &str, &[&str])]| NodeSelectorTerm {
            match_expressions: Some(
                exprs
                    .iter()
                    .map(|(k, op, vs)| NodeSelectorRequirement {
                        key: k.to_string(),
                        operator: op.to_string(),
                        values: Some(vs.iter().map(|v| v.to_string()).collect()),
                    })
                    .collect(),
            ),
            match_fields: None,
        };
        let affinity = |terms: Vec<NodeSelectorTerm>| VolumeNodeAffinity {
            required: Some(NodeSelector { node_selector_terms: terms }),
        };
        assert!(node_affinity_matches(None, "n1", &node).unwrap());
        let other = affinity(vec![term(&[("kubernetes.io/hostname", "In", &["n2"])])]);
        assert!(!node_affinity_matches(Some(&other), "n1", &node).unwrap());
        let either =
            affinity(vec![term(&[("kubernetes.io/hostname", "In", &["n2"])]), term(&[("disks", "Gt", &["2"])])]);
        assert!(node_affinity_matches(Some(&either), "n1", &node).unwrap());
        let both = affinity(vec![term(&[("kubernetes.io/hostname", "In", &["n1"]), ("disks", "Lt", &["3"])])]);
        assert!(!node_affinity_matches(Some(&both), "n1", &node).unwrap());
    }
}
