//! Turning Infisical's list responses into [`Listed`] secrets: where each one is looked up,
//! and which of several same-named secrets wins. Pure.
//!
//! Precedence inside one folder: the folder's own secret wins over any import; among
//! imports, the one configured later (higher position, later in the response's `imports`
//! array) wins over earlier ones. The server merges nothing itself.

use std::collections::{BTreeMap, HashSet};

use serde::Deserialize;

use super::{Listed, Origin};
use crate::secret::{SecretString, SecretValue};

/// A list response (`/api/v4/secrets`, `/api/v3/secrets/raw`), parsed once and kept for
/// ETag revalidation.
#[derive(Deserialize)]
pub(crate) struct ListBody {
    pub secrets: Vec<Item>,
    #[serde(default)]
    pub imports: Vec<ImportBlock>,
}

#[derive(Deserialize)]
pub(crate) struct Item {
    #[serde(rename = "secretKey")]
    pub key: String,
    #[serde(rename = "secretValue")]
    pub value: SecretString,
    /// The folder of an own secret; absent on imported ones.
    #[serde(rename = "secretPath", default)]
    pub path: Option<String>,
}

/// The secrets one import brings; `path` and `environment` name the SOURCE folder.
#[derive(Deserialize)]
pub(crate) struct ImportBlock {
    #[serde(rename = "secretPath")]
    pub path: String,
    pub environment: String,
    #[serde(default)]
    pub secrets: Vec<Item>,
}

/// Folder paths as the server reports them: no trailing slash except the root.
pub(crate) fn normalize(path: &str) -> String {
    let trimmed = path.trim_end_matches('/');
    if trimmed.is_empty() {
        "/".into()
    } else if trimmed.starts_with('/') {
        trimmed.into()
    } else {
        format!("/{trimmed}")
    }
}

fn value(item: &Item) -> SecretValue {
    SecretValue::new(item.value.expose().as_bytes().to_vec())
}

/// The own secrets of a response, each placed in its `secretPath` (else `folder`).
pub(crate) fn own(body: &ListBody, folder: &str) -> Vec<Listed> {
    body.secrets
        .iter()
        .map(|item| Listed {
            key: item.key.clone(),
            path: item
                .path
                .as_deref()
                .map_or_else(|| folder.to_owned(), normalize),
            value: value(item),
            origin: Origin::Own,
        })
        .collect()
}

/// Adds the imports of `folder` to `out`, keeping what is already there for that folder
/// and letting later imports win over earlier ones.
pub(crate) fn merge_imports(out: &mut Vec<Listed>, folder: &str, imports: &[ImportBlock]) {
    let mut taken: HashSet<String> = out
        .iter()
        .filter(|l| l.path == folder)
        .map(|l| l.key.clone())
        .collect();
    for block in imports.iter().rev() {
        for item in &block.secrets {
            if taken.insert(item.key.clone()) {
                out.push(Listed {
                    key: item.key.clone(),
                    path: folder.to_owned(),
                    value: value(item),
                    origin: Origin::Import {
                        environment: block.environment.clone(),
                        path: normalize(&block.path),
                    },
                });
            }
        }
    }
}

/// The folders a recursive listing of `root` shows to exist: `root`, every folder holding
/// an own secret, and the folders between them.
pub(crate) fn folders(root: &str, own: &[Listed]) -> Vec<String> {
    let mut found = std::collections::BTreeSet::from([root.to_owned()]);
    for listed in own {
        let mut path = listed.path.as_str();
        while path.len() > root.len() && path.starts_with(root) {
            found.insert(path.to_owned());
            path = match path.rfind('/') {
                Some(0) => "/",
                Some(at) => &path[..at],
                None => break,
            };
        }
    }
    found.into_iter().collect()
}

/// Import sources counted by (environment, folder): what a recursive response holds must
/// equal what the per-folder listings found, or some import is unattributed.
pub(crate) fn import_sources<'a>(
    blocks: impl Iterator<Item = &'a ImportBlock>,
) -> BTreeMap<(String, String), usize> {
    let mut counts = BTreeMap::new();
    for block in blocks {
        *counts
            .entry((block.environment.clone(), normalize(&block.path)))
            .or_default() += 1;
    }
    counts
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(json: &str) -> ListBody {
        serde_json::from_str(json).unwrap()
    }

    fn view(listed: &[Listed]) -> Vec<(String, String, String, String)> {
        let mut v: Vec<_> = listed
            .iter()
            .map(|l| {
                let origin = match &l.origin {
                    Origin::Own => "own".to_owned(),
                    Origin::Import { environment, path } => format!("{environment}:{path}"),
                };
                (
                    l.path.clone(),
                    l.key.clone(),
                    String::from_utf8(l.value.expose().to_vec()).unwrap(),
                    origin,
                )
            })
            .collect();
        v.sort();
        v
    }

    #[test]
    fn own_wins_then_later_imports() {
        let body = body(
            r#"{"secrets":[{"secretKey":"APP_PORT","secretValue":"8443","secretPath":"/app"}],
                "imports":[
                  {"secretPath":"/shared","environment":"staging","secrets":[
                     {"secretKey":"APP_PORT","secretValue":"9090"},
                     {"secretKey":"TOKEN","secretValue":"first"},
                     {"secretKey":"ONLY_FIRST","secretValue":"1"}]},
                  {"secretPath":"/shared/","environment":"prod","secrets":[
                     {"secretKey":"TOKEN","secretValue":"second"}]}]}"#,
        );
        let mut out = own(&body, "/app");
        merge_imports(&mut out, "/app", &body.imports);
        let s = |a: &str| a.to_owned();
        assert_eq!(
            view(&out),
            vec![
                (s("/app"), s("APP_PORT"), s("8443"), s("own")),
                (s("/app"), s("ONLY_FIRST"), s("1"), s("staging:/shared")),
                (s("/app"), s("TOKEN"), s("second"), s("prod:/shared")),
            ]
        );
    }

    #[test]
    fn own_secrets_fall_back_to_the_requested_folder() {
        let body = body(r#"{"secrets":[{"secretKey":"K","secretValue":"v"}]}"#);
        assert_eq!(own(&body, "/x")[0].path, "/x");
    }

    #[test]
    fn folders_of_a_tree() {
        let listed = |path: &str| Listed {
            key: "K".into(),
            path: path.into(),
            value: SecretValue::new(vec![]),
            origin: Origin::Own,
        };
        assert_eq!(
            folders("/", &[listed("/a/b/c"), listed("/d")]),
            ["/", "/a", "/a/b", "/a/b/c", "/d"]
        );
        assert_eq!(
            folders("/app", &[listed("/app/db"), listed("/app")]),
            ["/app", "/app/db"]
        );
        assert_eq!(normalize("/app/"), "/app");
        assert_eq!(normalize(""), "/");
        assert_eq!(normalize("app"), "/app");
    }
}
