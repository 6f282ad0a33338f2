//! Which version of each Istio kind the API server serves: API discovery of the
//! `networking.istio.io` group, preferring v1, then v1beta1, then v1alpha3 (Istio serves the
//! same schema under all three, so the newest one avoids deprecation warnings).
//!
//! Depends on: kube (Client discovery calls, `ApiResource`).

use kube::core::ApiResource;
use kube::Client;

/// The Istio API group.
pub(crate) const GROUP: &str = "networking.istio.io";

/// Versions in order of preference.
const PREFERENCE: [&str; 3] = ["v1", "v1beta1", "v1alpha3"];

/// The Istio kinds meshgate reads: (kind, plural).
pub(crate) const KINDS: [(&str, &str); 5] = [
    ("Gateway", "gateways"),
    ("VirtualService", "virtualservices"),
    ("DestinationRule", "destinationrules"),
    ("ServiceEntry", "serviceentries"),
    ("WorkloadEntry", "workloadentries"),
];

/// For each of `KINDS`, the resource at its most preferred served version, or `None` when
/// the API server does not serve that kind.
pub(crate) async fn istio_resources(
    client: &Client,
) -> Result<Vec<Option<ApiResource>>, kube::Error> {
    let groups = client.list_api_groups().await?;
    let served: Vec<String> = groups
        .groups
        .iter()
        .filter(|g| g.name == GROUP)
        .flat_map(|g| g.versions.iter().map(|v| v.version.clone()))
        .collect();
    let mut lists = Vec::new();
    for version in PREFERENCE.iter().filter(|v| served.iter().any(|s| s == *v)) {
        let list = client
            .list_api_group_resources(&format!("{GROUP}/{version}"))
            .await?;
        let plurals: Vec<String> = list.resources.into_iter().map(|r| r.name).collect();
        lists.push((*version, plurals));
    }
    Ok(choose(&lists))
}

/// Pick, for each kind, the first version (in preference order) whose list has its plural.
fn choose(lists: &[(&str, Vec<String>)]) -> Vec<Option<ApiResource>> {
    KINDS
        .iter()
        .map(|(kind, plural)| {
            lists
                .iter()
                .find(|(_, plurals)| plurals.iter().any(|p| p == plural))
                .map(|(version, _)| ApiResource {
                    group: GROUP.to_owned(),
                    version: (*version).to_owned(),
                    api_version: format!("{GROUP}/{version}"),
                    kind: (*kind).to_owned(),
                    plural: (*plural).to_owned(),
                })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefers_newest_served_version_per_kind() {
        let all = |names: &[&str]| names.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        // Lists arrive in preference order; v1 lacks workloadentries here.
        let lists = vec![
            (
                "v1",
                all(&[
                    "gateways",
                    "virtualservices",
                    "destinationrules",
                    "serviceentries",
                ]),
            ),
            ("v1alpha3", all(&["gateways", "workloadentries"])),
        ];
        let got = choose(&lists);
        assert_eq!(
            got[0].as_ref().unwrap().api_version,
            "networking.istio.io/v1"
        );
        assert_eq!(got[4].as_ref().unwrap().version, "v1alpha3");
        assert_eq!(got[4].as_ref().unwrap().kind, "WorkloadEntry");
        assert!(choose(&[]).iter().all(Option::is_none));
    }
}
