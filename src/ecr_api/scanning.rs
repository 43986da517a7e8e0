//! Scanning operations: PutImageScanningConfiguration,
//! Put/GetRegistryScanningConfiguration, BatchGetRepositoryScanningConfiguration,
//! StartImageScan, DescribeImageScanFindings, and the scan fields of
//! DescribeImages. The scans themselves are the `scanning` service's.

use serde_json::{Value, json};

use super::images::{ImageId, resolve};
use super::input::{self, Input};
use super::{Ctx, EcrError, timestamp};
use crate::digest::Digest;
use crate::registry::RepoId;
use crate::registry::scan_config::{
    ScanFrequency, ScanRule, ScanType, ScanningConfiguration, filter_is_valid,
};
use crate::scanning::{self, StoredFinding, StoredFindings};

fn config_json(c: &ScanningConfiguration) -> Value {
    json!({
        "scanType": c.scan_type.as_str(),
        "rules": c.rules.iter().map(|r| json!({
            "scanFrequency": r.frequency.as_str(),
            "repositoryFilters": r.filters.iter()
                .map(|f| json!({ "filter": f, "filterType": "WILDCARD" }))
                .collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
    })
}

async fn configuration(ctx: &Ctx<'_>, registry: &str) -> Result<ScanningConfiguration, EcrError> {
    ctx.state
        .registry
        .scanning_configuration(registry)
        .await
        .map_err(|e| EcrError::from_registry(e, "", registry))
}

pub(super) async fn put_image_scanning_configuration(
    ctx: &Ctx<'_>,
    input: &Input,
) -> Result<Value, EcrError> {
    let name = input::repository_name(input)?;
    let registry = ctx.registry_id(input)?;
    let c = input
        .opt_object("imageScanningConfiguration")?
        .ok_or_else(|| {
            EcrError::invalid("Missing required parameter: imageScanningConfiguration")
        })?;
    let on = match c.get("scanOnPush") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(EcrError::serialization("scanOnPush must be a boolean")),
    };
    ctx.authorize(
        "PutImageScanningConfiguration",
        &registry,
        Some(name.as_str()),
    )
    .await?;
    let repo = RepoId::new(&registry, name);
    if !ctx
        .state
        .registry
        .set_scan_on_push(repo.key(), on)
        .await
        .map_err(EcrError::meta)?
    {
        return Err(EcrError::repository_not_found(
            repo.name.as_str(),
            &registry,
        ));
    }
    Ok(json!({
        "registryId": crate::reference::key_account(&registry),
        "repositoryName": repo.name.as_str(),
        "imageScanningConfiguration": { "scanOnPush": on },
    }))
}

pub(super) async fn get_registry_scanning_configuration(
    ctx: &Ctx<'_>,
    input: &Input,
) -> Result<Value, EcrError> {
    let registry = ctx.own_registry();
    let _ = input;
    ctx.authorize("GetRegistryScanningConfiguration", &registry, None)
        .await?;
    let c = configuration(ctx, &registry).await?;
    Ok(
        json!({ "registryId": crate::reference::key_account(&registry), "scanningConfiguration": config_json(&c) }),
    )
}

fn parse_configuration(input: &Input) -> Result<ScanningConfiguration, EcrError> {
    let scan_type = match input.opt_str("scanType")? {
        None => ScanType::Basic,
        Some(s) => {
            input::check_enum("scanType", s, &["BASIC", "ENHANCED"])?;
            ScanType::parse(s).unwrap_or_default()
        }
    };
    let mut rules = Vec::new();
    if let Some(list) = input.opt_array("rules")? {
        input::check_count("rules", list.len(), 0, 2)?;
        for r in list {
            let freq = r
                .get("scanFrequency")
                .and_then(Value::as_str)
                .ok_or_else(|| {
                    EcrError::invalid("Missing required parameter: rules.scanFrequency")
                })?;
            input::check_enum(
                "rules.scanFrequency",
                freq,
                &["SCAN_ON_PUSH", "CONTINUOUS_SCAN", "MANUAL"],
            )?;
            let frequency = ScanFrequency::parse(freq).unwrap_or(ScanFrequency::Manual);
            let filters = r
                .get("repositoryFilters")
                .and_then(Value::as_array)
                .ok_or_else(|| {
                    EcrError::invalid("Missing required parameter: rules.repositoryFilters")
                })?;
            input::check_count("rules.repositoryFilters", filters.len(), 0, 100)?;
            let mut out = Vec::with_capacity(filters.len());
            for f in filters {
                let text = f.get("filter").and_then(Value::as_str).ok_or_else(|| {
                    EcrError::invalid("Missing required parameter: rules.repositoryFilters.filter")
                })?;
                let kind = f.get("filterType").and_then(Value::as_str).ok_or_else(|| {
                    EcrError::invalid(
                        "Missing required parameter: rules.repositoryFilters.filterType",
                    )
                })?;
                input::check_enum("rules.repositoryFilters.filterType", kind, &["WILDCARD"])?;
                if !filter_is_valid(text) {
                    return Err(EcrError::constraint(
                        "rules.repositoryFilters.filter",
                        "Member must satisfy regular expression pattern: ^[a-z0-9*](?:[._\\-/a-z0-9*]?[a-z0-9*]+)*$",
                    ));
                }
                out.push(text.to_string());
            }
            if scan_type == ScanType::Basic && frequency == ScanFrequency::ContinuousScan {
                return Err(EcrError::new(
                    "ValidationException",
                    400,
                    "CONTINUOUS_SCAN is only supported with the ENHANCED scan type",
                ));
            }
            rules.push(ScanRule {
                frequency,
                filters: out,
            });
        }
    }
    Ok(ScanningConfiguration { scan_type, rules })
}

pub(super) async fn put_registry_scanning_configuration(
    ctx: &Ctx<'_>,
    input: &Input,
) -> Result<Value, EcrError> {
    let registry = ctx.own_registry();
    let c = parse_configuration(input)?;
    ctx.authorize("PutRegistryScanningConfiguration", &registry, None)
        .await?;
    scanning::put_configuration(&ctx.state.registry, &registry, &c)
        .await
        .map_err(EcrError::meta)?;
    Ok(json!({ "registryScanningConfiguration": config_json(&c) }))
}

pub(super) async fn batch_get_repository_scanning_configuration(
    ctx: &Ctx<'_>,
    input: &Input,
) -> Result<Value, EcrError> {
    let registry = ctx.own_registry();
    let names = input
        .opt_str_list("repositoryNames")?
        .ok_or_else(|| EcrError::invalid("Missing required parameter: repositoryNames"))?;
    input::check_count("repositoryNames", names.len(), 1, 25)?;
    let config = configuration(ctx, &registry).await?;
    let mut configs = Vec::new();
    let mut failures = Vec::new();
    for name in names {
        let repo = match crate::reference::RepoName::parse(&name) {
            Some(n) => RepoId::new(&registry, n),
            None => {
                failures.push(
                    json!({ "repositoryName": name, "failureCode": "REPOSITORY_NOT_FOUND",
                    "failureReason": "REPOSITORY_NOT_FOUND" }),
                );
                continue;
            }
        };
        ctx.authorize(
            "BatchGetRepositoryScanningConfiguration",
            &registry,
            Some(repo.name.as_str()),
        )
        .await?;
        let row = ctx
            .state
            .registry
            .get_repository(repo.key())
            .await
            .map_err(EcrError::meta)?;
        let Some(row) = row else {
            failures.push(
                json!({ "repositoryName": name, "failureCode": "REPOSITORY_NOT_FOUND",
                "failureReason": "REPOSITORY_NOT_FOUND" }),
            );
            continue;
        };
        let e = config.effective(&row);
        configs.push(json!({
            "repositoryArn": ctx.repository_arn(&registry, &row.name),
            "repositoryName": row.name,
            "scanOnPush": e.on_push(),
            "scanFrequency": e.frequency.as_str(),
            "appliedScanFilters": e.applied_filters.iter()
                .map(|f| json!({ "filter": f, "filterType": "WILDCARD" }))
                .collect::<Vec<_>>(),
        }));
    }
    Ok(json!({ "scanningConfigurations": configs, "failures": failures }))
}

pub(super) fn image_id_input(input: &Input) -> Result<ImageId, EcrError> {
    input
        .opt_object("imageId")?
        .ok_or_else(|| EcrError::invalid("Missing required parameter: imageId"))?;
    ImageId::from_json(input.get("imageId").unwrap_or(&Value::Null))
}

/// The image an operation names, resolved to its digest.
pub(super) async fn resolved(
    ctx: &Ctx<'_>,
    repo: &RepoId,
    id: &ImageId,
) -> Result<(Digest, Value), EcrError> {
    let digest = match resolve(ctx, repo, id).await? {
        Ok(d) => d,
        Err(failure) => {
            let code = failure["failureCode"].as_str().unwrap_or("");
            if code == "ImageNotFound" {
                return Err(id.not_found(repo));
            }
            return Err(EcrError::invalid(
                failure["failureReason"]
                    .as_str()
                    .unwrap_or("invalid imageId"),
            ));
        }
    };
    let parsed: Digest = digest.parse().map_err(|_| id.not_found(repo))?;
    let mut image_id = json!({ "imageDigest": digest });
    if let Some(t) = &id.tag {
        image_id["imageTag"] = json!(t);
    }
    Ok((parsed, image_id))
}

pub(super) async fn start_image_scan(ctx: &Ctx<'_>, input: &Input) -> Result<Value, EcrError> {
    let id = image_id_input(input)?;
    let repo = ctx.existing_repo(input, "StartImageScan").await?;
    let (digest, image_id) = resolved(ctx, &repo, &id).await?;
    match scanning::start_scan(&ctx.state.registry, repo.key(), &digest).await {
        Ok(()) => Ok(json!({
            "registryId": crate::reference::key_account(&repo.registry),
            "repositoryName": repo.name.as_str(),
            "imageId": image_id,
            "imageScanStatus": { "status": scanning::IN_PROGRESS },
        })),
        Err(scanning::StartError::Quota) => Err(EcrError::new(
            "LimitExceededException",
            400,
            "The scan quota per image has been exceeded. Wait and try again.",
        )),
        Err(scanning::StartError::Unsupported(m)) => {
            Err(EcrError::new("UnsupportedImageTypeException", 400, m))
        }
        Err(scanning::StartError::Meta(m)) => Err(EcrError::meta(m)),
        Err(scanning::StartError::Registry(e)) => Err(EcrError::from_registry(
            e,
            repo.name.as_str(),
            &repo.registry,
        )),
    }
}

fn basic_finding(f: &StoredFinding) -> Value {
    let x = &f.finding;
    let mut attributes = vec![
        json!({ "key": "package_name", "value": x.package_name }),
        json!({ "key": "package_version", "value": x.package_version }),
    ];
    if let (Some(kind), Some(vector), Some(score)) = (&x.cvss_kind, &x.cvss_vector, x.cvss_score) {
        // CVSS_V3 → CVSS3_VECTOR / CVSS3_SCORE, as ECR's CVSS2_* keys.
        let n = kind.trim_start_matches("CVSS_V");
        attributes.push(json!({ "key": format!("CVSS{n}_VECTOR"), "value": vector }));
        attributes.push(json!({ "key": format!("CVSS{n}_SCORE"), "value": format!("{score:.1}") }));
    }
    if let Some(v) = &x.fixed_version {
        attributes.push(json!({ "key": "fixed_version", "value": v }));
    }
    json!({
        "name": x.name,
        "description": x.description,
        "uri": x.uri,
        "severity": x.severity.as_str(),
        "attributes": attributes,
    })
}

/// The CVSS version of a vector, as Inspector writes it (`3.1`, `4.0`).
fn cvss_version(kind: &str, vector: &str) -> String {
    if let Some(rest) = vector.strip_prefix("CVSS:") {
        let v = rest.split('/').next().unwrap_or(rest);
        return if v.contains('.') {
            v.to_string()
        } else {
            format!("{v}.0")
        };
    }
    match kind {
        "CVSS_V2" => "2.0".into(),
        "CVSS_V4" => "4.0".into(),
        _ => "3.0".into(),
    }
}

/// Inspector's `packageManager` for a finding's package.
fn package_manager(f: &berth_scanner::matcher::Finding) -> &'static str {
    if f.os {
        return "OS";
    }
    match f.ecosystem.as_str() {
        "PyPI" => "PYTHONPKG",
        "npm" => "NODEPKG",
        "Go" => "GOBINARY",
        "crates.io" => "CARGO",
        "Maven" => "JAR",
        "RubyGems" => "GEMSPEC",
        _ => "OS",
    }
}

fn enhanced_finding(ctx: &Ctx<'_>, repo: &RepoId, digest: &str, f: &StoredFinding) -> Value {
    let x = &f.finding;
    let arn_id = {
        use sha2::Digest as _;
        let h = sha2::Sha256::digest(
            format!(
                "{}\n{}\n{digest}\n{}\n{}\n{}",
                repo.registry, repo.name, x.name, x.package_name, x.package_version
            )
            .as_bytes(),
        );
        hex::encode(&h[..16])
    };
    let mut cvss = Vec::new();
    if let (Some(kind), Some(vector), Some(score)) = (&x.cvss_kind, &x.cvss_vector, x.cvss_score) {
        cvss.push(json!({
            "baseScore": score,
            "scoringVector": vector,
            "source": "OSV",
            "version": cvss_version(kind, vector),
        }));
    }
    let mut package = json!({
        "name": x.package_name,
        "version": x.package_version,
        "packageManager": package_manager(x),
    });
    if let Some(v) = &x.fixed_version {
        package["fixedInVersion"] = json!(v);
    }
    if let Some(l) = &x.layer {
        package["sourceLayerHash"] = json!(l);
    }
    let mut v = json!({
        "awsAccountId": repo.registry,
        "description": x.description,
        "findingArn": format!("arn:aws:inspector2:{}:{}:finding/{arn_id}", crate::reference::key_region(&repo.registry, &ctx.state.region), crate::reference::key_account(&repo.registry)),
        "firstObservedAt": timestamp(f.first_observed_at),
        "lastObservedAt": timestamp(f.last_observed_at),
        "updatedAt": timestamp(f.updated_at),
        "packageVulnerabilityDetails": {
            "cvss": cvss,
            "referenceUrls": [x.uri],
            "relatedVulnerabilities": x.advisories.iter().filter(|a| **a != x.name).collect::<Vec<_>>(),
            "source": "OSV",
            "sourceUrl": x.uri,
            "vendorSeverity": x.severity.as_str(),
            "vulnerabilityId": x.name,
            "vulnerablePackages": [package],
        },
        "remediation": { "recommendation": { "text": match &x.fixed_version {
            Some(v) => format!("Upgrade {} to {v} or later.", x.package_name),
            None => "None provided".to_string(),
        } } },
        "resources": [{
            "id": format!("{}/{digest}", ctx.repository_arn(&repo.registry, repo.name.as_str())),
            "type": "AWS_ECR_CONTAINER_IMAGE",
            "details": { "awsEcrContainerImage": {
                "imageHash": digest,
                "registry": repo.registry,
                "repositoryName": repo.name.as_str(),
            } },
        }],
        "severity": x.severity.as_str(),
        "status": f.status.as_str(),
        "title": format!("{} - {}", x.name, x.package_name),
        "type": "PACKAGE_VULNERABILITY",
        "fixAvailable": if x.fixed_version.is_some() { "YES" } else { "NO" },
    });
    if let Some(s) = x.cvss_score {
        v["score"] = json!(s);
    }
    v
}

/// The page cursor of DescribeImageScanFindings: an offset into the
/// scan's findings, bound to the scan it was made for.
fn page_cursor(completed_at: Option<i64>, offset: usize) -> String {
    format!("{}:{offset}", completed_at.unwrap_or(0))
}

pub(super) async fn describe_image_scan_findings(
    ctx: &Ctx<'_>,
    input: &Input,
) -> Result<Value, EcrError> {
    let id = image_id_input(input)?;
    let repo = ctx
        .existing_repo(input, "DescribeImageScanFindings")
        .await?;
    let limit = input.max_results(1000, 100)? as usize;
    let (digest, image_id) = resolved(ctx, &repo, &id).await?;
    let scan = scanning::latest_scan(&ctx.state.registry, repo.key(), &digest)
        .await
        .map_err(EcrError::meta)?
        .ok_or_else(|| {
            EcrError::new(
                "ScanNotFoundException",
                400,
                format!(
                    "Image scan does not exist for the image with '{{imageDigest:'{}', imageTag:'{}'}}' in the repository with name '{}' in the registry with id '{}'",
                    digest,
                    id.tag.as_deref().unwrap_or("null"),
                    repo.name,
                    repo.registry
                ),
            )
        })?;
    let mut v = json!({
        "registryId": crate::reference::key_account(&repo.registry),
        "repositoryName": repo.name.as_str(),
        "imageId": image_id,
        "imageScanStatus": { "status": scan.status, "description": scan.description },
    });
    if scan.status != scanning::COMPLETE {
        return Ok(v);
    }
    let offset = match ctx.page_token(
        input,
        "DescribeImageScanFindings",
        &repo.registry,
        Some(repo.name.as_str()),
    )? {
        Some(c) => {
            let (version, off) = c.split_once(':').unwrap_or(("", ""));
            if version != scan.completed_at.unwrap_or(0).to_string() {
                return Err(EcrError::invalid(
                    "Invalid parameter at 'nextToken' failed to satisfy constraint: 'the scan changed since this token was made'",
                ));
            }
            off.parse::<usize>().map_err(|_| {
                EcrError::invalid(
                    "Invalid parameter at 'nextToken' failed to satisfy constraint: 'Invalid pagination token'",
                )
            })?
        }
        None => 0,
    };
    let findings = StoredFindings::from_doc(scan.findings.as_deref());
    let counts: Value = scan
        .counts
        .as_deref()
        .and_then(|c| serde_json::from_str(c).ok())
        .unwrap_or_else(|| json!({}));
    let enhanced = scan.scan_type == ScanType::Enhanced.as_str();
    let listed: Vec<&StoredFinding> = if enhanced {
        findings.findings.iter().collect()
    } else {
        findings.active().collect()
    };
    let page: Vec<&StoredFinding> = listed.iter().skip(offset).take(limit).copied().collect();
    let mut body = json!({
        "imageScanCompletedAt": timestamp(scan.completed_at.unwrap_or(0)),
        "findingSeverityCounts": counts,
    });
    if let Some(s) = scan.source_updated_at {
        body["vulnerabilitySourceUpdatedAt"] = timestamp(s);
    }
    if enhanced {
        body["enhancedFindings"] = json!(
            page.iter()
                .map(|f| enhanced_finding(ctx, &repo, digest.as_str(), f))
                .collect::<Vec<_>>()
        );
    } else {
        body["findings"] = json!(page.iter().map(|f| basic_finding(f)).collect::<Vec<_>>());
    }
    v["imageScanFindings"] = body;
    if offset + page.len() < listed.len() {
        v["nextToken"] = json!(ctx.next_token(
            "DescribeImageScanFindings",
            &repo.registry,
            Some(repo.name.as_str()),
            &page_cursor(scan.completed_at, offset + page.len()),
        ));
    }
    Ok(v)
}

/// Add `imageScanStatus` and `imageScanFindingsSummary` to DescribeImages'
/// image details of `repo` that have a scan.
pub(super) async fn add_scan_summaries(
    ctx: &Ctx<'_>,
    repo: &RepoId,
    details: &mut [Value],
) -> Result<(), EcrError> {
    let digests: Vec<String> = details
        .iter()
        .filter_map(|d| d["imageDigest"].as_str().map(str::to_string))
        .collect();
    let refs: Vec<&str> = digests.iter().map(String::as_str).collect();
    let scans = scanning::scan_summaries(&ctx.state.registry, repo.key(), &refs)
        .await
        .map_err(EcrError::meta)?;
    for d in details.iter_mut() {
        let Some(scan) = d["imageDigest"].as_str().and_then(|k| scans.get(k)) else {
            continue;
        };
        d["imageScanStatus"] = json!({ "status": scan.status, "description": scan.description });
        if scan.status == scanning::COMPLETE {
            let counts: Value = scan
                .counts
                .as_deref()
                .and_then(|c| serde_json::from_str(c).ok())
                .unwrap_or_else(|| json!({}));
            let mut summary = json!({
                "imageScanCompletedAt": timestamp(scan.completed_at.unwrap_or(0)),
                "findingSeverityCounts": counts,
            });
            if let Some(s) = scan.source_updated_at {
                summary["vulnerabilitySourceUpdatedAt"] = timestamp(s);
            }
            d["imageScanFindingsSummary"] = summary;
        }
    }
    Ok(())
}
