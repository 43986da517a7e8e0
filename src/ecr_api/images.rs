//! Image operations: ListImages, DescribeImages, BatchGetImage,
//! BatchDeleteImage, PutImage. Images are manifests; an image's tags are the
//! tags pointing at its digest.

use serde_json::{Value, json};

use super::input::{self, Input};
use super::{Ctx, EcrError, timestamp};
use crate::digest::Digest;
use crate::reference::{Reference, valid_tag};
use crate::registry::{ImageIdRow, ImageRow, Repo, TagFilter};
use crate::registry::{RegistryError, RepoId};

/// An `ImageIdentifier` as given: digest and/or tag.
#[derive(Clone, Debug)]
pub(super) struct ImageId {
    pub(super) digest: Option<String>,
    pub(super) tag: Option<String>,
}

impl ImageId {
    fn json(&self) -> Value {
        let mut v = json!({});
        if let Some(d) = &self.digest {
            v["imageDigest"] = json!(d);
        }
        if let Some(t) = &self.tag {
            v["imageTag"] = json!(t);
        }
        v
    }

    /// An `ImageIdentifier` object of a request.
    pub(super) fn from_json(v: &Value) -> Result<ImageId, EcrError> {
        let get = |k: &str| match v.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(EcrError::serialization(format!("{k} must be a string"))),
        };
        Ok(ImageId {
            digest: get("imageDigest")?,
            tag: get("imageTag")?,
        })
    }

    /// ECR's ImageNotFoundException for this identifier in `repo`.
    pub(super) fn not_found(&self, repo: &RepoId) -> EcrError {
        EcrError::new(
            "ImageNotFoundException",
            400,
            format!(
                "The image with imageId {{imageDigest:'{}', imageTag:'{}'}} does not exist within the repository with name '{}' in the registry with id '{}'",
                self.digest.as_deref().unwrap_or("null"),
                self.tag.as_deref().unwrap_or("null"),
                repo.name,
                repo.registry
            ),
        )
    }

    fn failure(&self, code: &str, reason: &str) -> Value {
        json!({ "imageId": self.json(), "failureCode": code, "failureReason": reason })
    }
}

pub(super) fn image_ids(input: &Input) -> Result<Option<Vec<ImageId>>, EcrError> {
    let Some(list) = input.opt_array("imageIds")? else {
        return Ok(None);
    };
    input::check_count("imageIds", list.len(), 1, 100)?;
    list.iter()
        .map(ImageId::from_json)
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

/// Resolve an identifier to a digest, or a per-item failure.
pub(super) async fn resolve(
    ctx: &Ctx<'_>,
    repo: &RepoId,
    id: &ImageId,
) -> Result<Result<String, Value>, EcrError> {
    let reg = &ctx.state.registry;
    if let Some(d) = &id.digest
        && d.parse::<Digest>().is_err()
    {
        return Ok(Err(id.failure("InvalidImageDigest", "Invalid request parameters: image digest should satisfy the regex '[a-zA-Z0-9-_+.]+:[a-fA-F0-9]+'")));
    }
    if let Some(t) = &id.tag
        && (t.is_empty() || t.chars().count() > 300)
    {
        return Ok(Err(id.failure(
            "InvalidImageTag",
            "Invalid request parameters: image tag must be 1 to 300 characters",
        )));
    }
    let by_tag = match &id.tag {
        Some(t) => reg
            .tag_digest(repo.key(), t)
            .await
            .map_err(EcrError::meta)?,
        None => None,
    };
    let digest = match (&id.digest, &id.tag, by_tag) {
        (None, None, _) => {
            return Ok(Err(id.failure(
                "MissingDigestAndTag",
                "Invalid request parameters: both tag and digest cannot be null",
            )));
        }
        (Some(d), Some(_), Some(t)) if &t != d => {
            return Ok(Err(id.failure(
                "ImageTagDoesNotMatchDigest",
                "Invalid request parameters: given tag and digest do not point to the same image",
            )));
        }
        (_, Some(_), None) => {
            return Ok(Err(id.failure("ImageNotFound", "Requested image not found")));
        }
        (_, Some(_), Some(t)) => t,
        (Some(d), None, _) => d.clone(),
    };
    let exists = reg
        .image(repo.key(), &digest)
        .await
        .map_err(EcrError::meta)?
        .is_some();
    if !exists {
        return Ok(Err(id.failure("ImageNotFound", "Requested image not found")));
    }
    Ok(Ok(digest))
}

fn tag_status(input: &Input) -> Result<TagFilter, EcrError> {
    let Some(f) = input.opt_object("filter")? else {
        return Ok(TagFilter::Any);
    };
    if let Some(s) = f.get("imageStatus").and_then(Value::as_str) {
        input::check_enum(
            "filter.imageStatus",
            s,
            &["ACTIVE", "ARCHIVED", "ACTIVATING", "ANY"],
        )?;
    }
    match f.get("tagStatus").and_then(Value::as_str) {
        None => Ok(TagFilter::Any),
        Some(s) => {
            input::check_enum("filter.tagStatus", s, &["TAGGED", "UNTAGGED", "ANY"])?;
            Ok(match s {
                "TAGGED" => TagFilter::Tagged,
                "UNTAGGED" => TagFilter::Untagged,
                _ => TagFilter::Any,
            })
        }
    }
}

/// A position in a repository's push-ordered image list, as a page token
/// carries it: the last image returned (push time and digest) and, for
/// ListImages, the last of its tags returned (when it was applied, and its
/// name), where the next page goes on.
struct Cursor(ImageIdRow);

impl Cursor {
    fn encode(&self) -> String {
        let ImageIdRow {
            pushed_at,
            digest,
            tag,
        } = &self.0;
        match tag {
            Some((at, name)) => format!("{pushed_at}\t{digest}\t{at}\t{name}"),
            None => format!("{pushed_at}\t{digest}"),
        }
    }

    fn decode(s: &str) -> Result<Cursor, EcrError> {
        let bad = || {
            EcrError::invalid(
                "Invalid parameter at 'nextToken' failed to satisfy constraint: 'Invalid pagination token'",
            )
        };
        let p: Vec<&str> = s.split('\t').collect();
        let tag = match p.len() {
            2 => None,
            4 => Some((p[2].parse().map_err(|_| bad())?, p[3].to_string())),
            _ => return Err(bad()),
        };
        Ok(Cursor(ImageIdRow {
            pushed_at: p[0].parse().map_err(|_| bad())?,
            digest: p[1].to_string(),
            tag,
        }))
    }
}

/// The images of `repo` after `after`, in push order, that `filter` keeps:
/// at most `want`, and whether more follow.
async fn page_images(
    ctx: &Ctx<'_>,
    repo: Repo<'_>,
    after: Option<(i64, &str)>,
    filter: TagFilter,
    want: usize,
) -> Result<(Vec<ImageRow>, bool), EcrError> {
    let mut rows = ctx
        .state
        .registry
        .list_images(repo, after, filter, want as i64 + 1)
        .await
        .map_err(EcrError::meta)?;
    let more = rows.len() > want;
    rows.truncate(want);
    Ok((rows, more))
}

pub(super) async fn list_images(ctx: &Ctx<'_>, input: &Input) -> Result<Value, EcrError> {
    let repo = ctx.existing_repo(input, "ListImages").await?;
    let limit = input.max_results(1000, 100)? as usize;
    let filter = tag_status(input)?;
    let cursor = match ctx.page_token(
        input,
        "ListImages",
        &repo.registry,
        Some(repo.name.as_str()),
    )? {
        Some(c) => Some(Cursor::decode(&c)?),
        None => None,
    };
    // One entry per tag (an untagged image is one entry without a tag). A
    // page may end inside an image: the next one first returns the rest of
    // that image's tags, then goes on after it.
    let mut entries = ctx
        .state
        .registry
        .list_image_ids(
            repo.key(),
            cursor.as_ref().map(|c| &c.0),
            filter,
            limit as i64 + 1,
        )
        .await
        .map_err(EcrError::meta)?;
    let more = entries.len() > limit;
    entries.truncate(limit);
    let ids: Vec<Value> = entries
        .iter()
        .map(|e| match &e.tag {
            Some((_, t)) => json!({ "imageDigest": e.digest, "imageTag": t }),
            None => json!({ "imageDigest": e.digest }),
        })
        .collect();
    let mut v = json!({ "imageIds": ids });
    if more && let Some(last) = entries.pop() {
        v["nextToken"] = json!(ctx.next_token(
            "ListImages",
            &repo.registry,
            Some(repo.name.as_str()),
            &Cursor(last).encode()
        ));
    }
    Ok(v)
}

fn image_detail(repo: &RepoId, img: &ImageRow) -> Value {
    let mut v = json!({
        "registryId": crate::reference::key_account(&repo.registry),
        "repositoryName": repo.name.as_str(),
        "imageDigest": img.digest,
        "imageSizeInBytes": img.image_size,
        "imagePushedAt": timestamp(img.pushed_at),
        "imageManifestMediaType": img.media_type,
        "imageStatus": "ACTIVE",
    });
    if !img.tags.is_empty() {
        v["imageTags"] = json!(img.tags);
    }
    if let Some(c) = &img.config_media_type {
        v["artifactMediaType"] = json!(c);
    }
    if let Some(s) = &img.subject {
        v["subjectManifestDigest"] = json!(s);
    }
    if let Some(p) = img.last_pulled_at {
        v["lastRecordedPullTime"] = timestamp(p);
    }
    v
}

pub(super) async fn describe_images(ctx: &Ctx<'_>, input: &Input) -> Result<Value, EcrError> {
    let repo = ctx.existing_repo(input, "DescribeImages").await?;
    let status = tag_status(input)?;
    if let Some(ids) = image_ids(input)? {
        if input.get("nextToken").is_some() || input.get("maxResults").is_some() {
            return Err(EcrError::invalid(
                "Invalid parameter: nextToken and maxResults cannot be used with imageIds",
            ));
        }
        let mut out = Vec::new();
        for id in &ids {
            match resolve(ctx, &repo, id).await? {
                Ok(d) => {
                    let img = ctx
                        .state
                        .registry
                        .image(repo.key(), &d)
                        .await
                        .map_err(EcrError::meta)?;
                    if let Some(img) = img
                        && !out
                            .iter()
                            .any(|v: &Value| v["imageDigest"] == json!(img.digest))
                    {
                        out.push(image_detail(&repo, &img));
                    }
                }
                Err(_) => return Err(id.not_found(&repo)),
            }
        }
        super::scanning::add_scan_summaries(ctx, &repo, &mut out).await?;
        return Ok(json!({ "imageDetails": out }));
    }
    let limit = input.max_results(1000, 100)? as usize;
    let after = match ctx.page_token(
        input,
        "DescribeImages",
        &repo.registry,
        Some(repo.name.as_str()),
    )? {
        Some(c) => Some(Cursor::decode(&c)?),
        None => None,
    };
    let (images, more) = page_images(
        ctx,
        repo.key(),
        after.as_ref().map(|c| (c.0.pushed_at, c.0.digest.as_str())),
        status,
        limit,
    )
    .await?;
    let mut details: Vec<Value> = images.iter().map(|i| image_detail(&repo, i)).collect();
    super::scanning::add_scan_summaries(ctx, &repo, &mut details).await?;
    let mut v = json!({ "imageDetails": details });
    if more && let Some(last) = images.last() {
        let c = Cursor(ImageIdRow {
            pushed_at: last.pushed_at,
            digest: last.digest.clone(),
            tag: None,
        });
        v["nextToken"] = json!(ctx.next_token(
            "DescribeImages",
            &repo.registry,
            Some(repo.name.as_str()),
            &c.encode()
        ));
    }
    Ok(v)
}

pub(super) async fn batch_get_image(ctx: &Ctx<'_>, input: &Input) -> Result<Value, EcrError> {
    let repo = ctx.existing_repo(input, "BatchGetImage").await?;
    let ids = image_ids(input)?
        .ok_or_else(|| EcrError::invalid("Missing required parameter: imageIds"))?;
    if let Some(types) = input.opt_str_list("acceptedMediaTypes")? {
        input::check_count("acceptedMediaTypes", types.len(), 1, 100)?;
    }
    let mut images = Vec::new();
    let mut failures = Vec::new();
    for id in &ids {
        match resolve(ctx, &repo, id).await? {
            Err(f) => failures.push(f),
            Ok(d) => {
                let digest: Digest = d
                    .parse()
                    .map_err(|_| EcrError::server("stored digest is invalid"))?;
                let m = ctx
                    .state
                    .registry
                    .pull_manifest(&repo, &Reference::Digest(digest))
                    .await
                    .map_err(|e| EcrError::from_registry(e, repo.name.as_str(), &repo.registry))?;
                let mut image_id = json!({ "imageDigest": d });
                if let Some(t) = &id.tag {
                    image_id["imageTag"] = json!(t);
                }
                images.push(json!({
                    "registryId": crate::reference::key_account(&repo.registry),
                    "repositoryName": repo.name.as_str(),
                    "imageId": image_id,
                    "imageManifest": String::from_utf8_lossy(&m.content),
                    "imageManifestMediaType": m.media_type,
                }));
            }
        }
    }
    Ok(json!({ "images": images, "failures": failures }))
}

pub(super) async fn batch_delete_image(ctx: &Ctx<'_>, input: &Input) -> Result<Value, EcrError> {
    let repo = ctx.existing_repo(input, "BatchDeleteImage").await?;
    let ids = image_ids(input)?
        .ok_or_else(|| EcrError::invalid("Missing required parameter: imageIds"))?;
    let reg = &ctx.state.registry;
    let mut deleted = Vec::new();
    let mut failures = Vec::new();
    for id in &ids {
        let digest = match resolve(ctx, &repo, id).await? {
            Err(f) => {
                failures.push(f);
                continue;
            }
            Ok(d) => d,
        };
        let parsed: Digest = digest
            .parse()
            .map_err(|_| EcrError::server("stored digest is invalid"))?;
        let img = reg
            .image(repo.key(), &digest)
            .await
            .map_err(EcrError::meta)?;
        let remaining_tags = img.map(|i| i.tags).unwrap_or_default();
        let only_tag = match &id.tag {
            Some(t) if remaining_tags.len() > 1 => Some(t.clone()),
            _ => None,
        };
        let result = match only_tag {
            // Other tags remain: remove just this tag.
            Some(t) => {
                ctx.state
                    .registry
                    .delete_manifest(&repo, &Reference::Tag(t))
                    .await
            }
            // By digest, or the image's last tag: the image goes with all its tags.
            None => {
                ctx.state
                    .registry
                    .delete_manifest(&repo, &Reference::Digest(parsed))
                    .await
            }
        };
        match result {
            Ok(tags) if tags.is_empty() => deleted.push(json!({ "imageDigest": digest })),
            Ok(tags) => {
                for t in tags {
                    deleted.push(json!({ "imageDigest": digest, "imageTag": t }));
                }
            }
            Err(RegistryError::ManifestReferenced) => failures.push(id.failure(
                "ImageReferencedByManifestList",
                "Requested image is referenced by a manifest list",
            )),
            Err(RegistryError::ManifestUnknown(_)) => {
                failures.push(id.failure("ImageNotFound", "Requested image not found"))
            }
            Err(e) => {
                return Err(EcrError::from_registry(
                    e,
                    repo.name.as_str(),
                    &repo.registry,
                ));
            }
        }
    }
    Ok(json!({ "imageIds": deleted, "failures": failures }))
}

pub(super) async fn put_image(ctx: &Ctx<'_>, input: &Input) -> Result<Value, EcrError> {
    let repo = ctx.existing_repo(input, "PutImage").await?;
    let manifest = input.str("imageManifest")?;
    input::check_len("imageManifest", manifest, 1, 4_194_304)?;
    let media_type = input.opt_str("imageManifestMediaType")?;
    let tag = input.opt_str("imageTag")?;
    if let Some(t) = tag {
        input::check_len("imageTag", t, 1, 300)?;
        if !valid_tag(t) {
            return Err(EcrError::constraint(
                "imageTag",
                "must satisfy regular expression '[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}'",
            ));
        }
    }
    let bytes = manifest.as_bytes();
    let computed = Digest::sha256_of(bytes);
    if let Some(d) = input.opt_str("imageDigest")? {
        let given: Digest = d.parse().map_err(|e: crate::digest::DigestError| {
            EcrError::constraint("imageDigest", e.to_string())
        })?;
        let actual = Digest::of(given.algorithm(), bytes);
        if actual != given {
            return Err(EcrError::new(
                "ImageDigestDoesNotMatchException",
                400,
                format!(
                    "Invalid parameter at 'imageDigest' failed to satisfy constraint: 'The digest {given} does not match the digest of the manifest, {actual}'"
                ),
            ));
        }
    }
    let declared = serde_json::from_slice::<Value>(bytes).ok().and_then(|v| {
        v.get("mediaType")
            .and_then(Value::as_str)
            .map(str::to_string)
    });
    if declared.is_none() && media_type.is_none() {
        return Err(EcrError::invalid(
            "Invalid parameter at 'imageManifestMediaType' failed to satisfy constraint: 'The manifest has no mediaType, so imageManifestMediaType is required'",
        ));
    }
    let reference = match tag {
        Some(t) => Reference::Tag(t.to_string()),
        None => Reference::Digest(computed.clone()),
    };
    let content_type = media_type.map(str::to_string).or(declared);
    let pushed = ctx
        .state
        .registry
        .put_manifest(&repo, &reference, content_type.as_deref(), bytes)
        .await
        .map_err(|e| match e {
            RegistryError::ManifestChildUnknown(d) => EcrError::new(
                "ReferencedImagesNotFoundException",
                400,
                format!(
                    "The manifest references images that do not exist in the repository: '{d}'"
                ),
            ),
            other => EcrError::from_registry(other, repo.name.as_str(), &repo.registry),
        })?;
    // The same manifest pushed again with no tag changes nothing and is not
    // an error (ECR answers it as a success); with a tag it already carries,
    // it is ImageAlreadyExistsException.
    if !pushed.changed && tag.is_some() {
        return Err(EcrError::new(
            "ImageAlreadyExistsException",
            400,
            format!(
                "Image with digest '{}' and tag '{}' already exists in the repository with name '{}' in registry with id '{}'",
                pushed.digest,
                tag.unwrap_or("null"),
                repo.name,
                repo.registry
            ),
        ));
    }
    let mut image_id = json!({ "imageDigest": pushed.digest.as_str() });
    if let Some(t) = tag {
        image_id["imageTag"] = json!(t);
    }
    Ok(json!({
        "image": {
            "registryId": crate::reference::key_account(&repo.registry),
            "repositoryName": repo.name.as_str(),
            "imageId": image_id,
            "imageManifest": manifest,
            "imageManifestMediaType": pushed.media_type,
        }
    }))
}
