//! The AWS SDK for Rust (`aws-sdk-ecr`) against the real server: the P0
//! operations end to end, typed exceptions, paginators, and a layer pushed
//! through the API that `/v2/` then serves byte for byte.

mod common;

use aws_sdk_ecr::Client;
use aws_sdk_ecr::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_ecr::primitives::Blob;
use aws_sdk_ecr::types::{ImageIdentifier, ImageTagMutability, Tag, TagStatus};
use base64::Engine;
use common::{ACCOUNT, ROOT_KEY_ID, ROOT_SECRET, Server, sha256};

fn client(s: &Server) -> Client {
    client_with(s, ROOT_KEY_ID, ROOT_SECRET)
}

fn client_with(s: &Server, key: &str, secret: &str) -> Client {
    let config = aws_sdk_ecr::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new(key, secret, None, None, "test"))
        .endpoint_url(s.url(""))
        .build();
    Client::from_conf(config)
}

/// The AWS error code an SDK call failed with.
fn error_code<E: aws_sdk_ecr::error::ProvideErrorMetadata>(e: E) -> Option<String> {
    e.code().map(str::to_string)
}

/// Push a blob through InitiateLayerUpload / UploadLayerPart / CompleteLayerUpload.
async fn upload_layer(c: &Client, repo: &str, bytes: &[u8], part: usize) -> String {
    let init = c
        .initiate_layer_upload()
        .repository_name(repo)
        .send()
        .await
        .unwrap();
    let id = init.upload_id().unwrap().to_string();
    assert_eq!(init.part_size(), Some(10_485_760));
    let mut first = 0usize;
    for chunk in bytes.chunks(part) {
        let last = first + chunk.len() - 1;
        let out = c
            .upload_layer_part()
            .repository_name(repo)
            .upload_id(&id)
            .part_first_byte(first as i64)
            .part_last_byte(last as i64)
            .layer_part_blob(Blob::new(chunk.to_vec()))
            .send()
            .await
            .unwrap();
        assert_eq!(out.last_byte_received(), Some(last as i64));
        first = last + 1;
    }
    let digest = sha256(bytes);
    let done = c
        .complete_layer_upload()
        .repository_name(repo)
        .upload_id(&id)
        .layer_digests(&digest)
        .send()
        .await
        .unwrap();
    assert_eq!(done.layer_digest(), Some(digest.as_str()));
    digest
}

#[tokio::test]
async fn sdk_drives_the_p0_operations() {
    let s = Server::start_ecr();
    let c = client(&s);

    // Repositories.
    let created = c
        .create_repository()
        .repository_name("sdk/app")
        .image_tag_mutability(ImageTagMutability::Immutable)
        .tags(
            Tag::builder()
                .key("team")
                .value("platform")
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    let repo = created.repository().unwrap();
    assert_eq!(repo.registry_id(), Some(ACCOUNT));
    assert_eq!(
        repo.repository_arn(),
        Some("arn:aws:ecr:us-east-1:123456789012:repository/sdk/app")
    );
    assert_eq!(
        repo.repository_uri(),
        Some(format!("{}/sdk/app", s.addr).as_str())
    );
    let err = c
        .create_repository()
        .repository_name("sdk/app")
        .send()
        .await
        .unwrap_err();
    assert!(
        err.into_service_error()
            .is_repository_already_exists_exception()
    );
    let err = c
        .describe_repositories()
        .repository_names("nope")
        .send()
        .await
        .unwrap_err();
    assert!(err.into_service_error().is_repository_not_found_exception());
    for i in 0..5 {
        c.create_repository()
            .repository_name(format!("page/r{i}"))
            .send()
            .await
            .unwrap();
    }
    let pages: Vec<_> = c
        .describe_repositories()
        .max_results(2)
        .into_paginator()
        .send()
        .collect::<Result<Vec<_>, _>>()
        .await
        .unwrap();
    assert_eq!(pages.len(), 3, "6 repositories in pages of 2");
    let names: Vec<_> = pages
        .iter()
        .flat_map(|p| {
            p.repositories()
                .iter()
                .map(|r| r.repository_name().unwrap().to_string())
        })
        .collect();
    assert_eq!(names.len(), 6);
    let tags = c
        .list_tags_for_resource()
        .resource_arn("arn:aws:ecr:us-east-1:123456789012:repository/sdk/app")
        .send()
        .await
        .unwrap();
    assert_eq!(tags.tags()[0].key(), "team");

    // A layer and a config through the API path, in 5 MiB parts.
    let layer: Vec<u8> = (0..12_000_000u32).map(|i| (i % 253) as u8).collect();
    let layer_digest = upload_layer(&c, "sdk/app", &layer, 5 << 20).await;
    let config =
        br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;
    let config_digest = upload_layer(&c, "sdk/app", config, 1 << 20).await;
    let avail = c
        .batch_check_layer_availability()
        .repository_name("sdk/app")
        .layer_digests(&layer_digest)
        .layer_digests(sha256(b"missing"))
        .send()
        .await
        .unwrap();
    assert_eq!(avail.layers().len(), 1);
    assert_eq!(avail.layers()[0].layer_size(), Some(layer.len() as i64));
    assert_eq!(avail.failures().len(), 1);

    // PutImage, then the same bytes come back from BatchGetImage and /v2/.
    let manifest = serde_json::to_string_pretty(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "size": config.len(), "digest": config_digest},
        "layers": [{"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip", "size": layer.len(), "digest": layer_digest}]
    }))
    .unwrap();
    let put = c
        .put_image()
        .repository_name("sdk/app")
        .image_manifest(&manifest)
        .image_tag("v1")
        .send()
        .await
        .unwrap();
    let digest = put
        .image()
        .unwrap()
        .image_id()
        .unwrap()
        .image_digest()
        .unwrap()
        .to_string();
    assert_eq!(digest, sha256(manifest.as_bytes()));
    // Retag is allowed; moving an immutable tag is not.
    c.put_image()
        .repository_name("sdk/app")
        .image_manifest(&manifest)
        .image_tag("v1-copy")
        .send()
        .await
        .unwrap();
    let other = manifest.replace("\"schemaVersion\": 2", "\"schemaVersion\": 2 ");
    let err = c
        .put_image()
        .repository_name("sdk/app")
        .image_manifest(&other)
        .image_tag("v1")
        .send()
        .await
        .unwrap_err();
    assert!(
        err.into_service_error()
            .is_image_tag_already_exists_exception()
    );

    let got = c
        .batch_get_image()
        .repository_name("sdk/app")
        .image_ids(ImageIdentifier::builder().image_tag("v1").build())
        .send()
        .await
        .unwrap();
    assert_eq!(got.images()[0].image_manifest(), Some(manifest.as_str()));
    let details = c
        .describe_images()
        .repository_name("sdk/app")
        .send()
        .await
        .unwrap();
    let d = &details.image_details()[0];
    assert_eq!(d.image_size_in_bytes(), Some(layer.len() as i64));
    let mut tags = d.image_tags().to_vec();
    tags.sort();
    assert_eq!(tags, ["v1", "v1-copy"]);
    assert!(d.image_pushed_at().is_some());
    let listed = c
        .list_images()
        .repository_name("sdk/app")
        .filter(
            aws_sdk_ecr::types::ListImagesFilter::builder()
                .tag_status(TagStatus::Tagged)
                .build(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(listed.image_ids().len(), 2);

    // /v2/ with a token from GetAuthorizationToken serves the same bytes.
    let auth = c.get_authorization_token().send().await.unwrap();
    let data = &auth.authorization_data()[0];
    let token = data.authorization_token().unwrap();
    let decoded = String::from_utf8(
        base64::engine::general_purpose::STANDARD
            .decode(token)
            .unwrap(),
    )
    .unwrap();
    let (user, password) = decoded.split_once(':').unwrap();
    assert_eq!(user, "AWS");
    assert!(!password.contains(':'));
    let http = reqwest::Client::new();
    let blob = http
        .get(s.url(&format!("/v2/sdk/app/blobs/{layer_digest}")))
        .basic_auth("AWS", Some(password))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(sha256(&blob), layer_digest);
    let m = http
        .get(s.url("/v2/sdk/app/manifests/v1"))
        .basic_auth("AWS", Some(password))
        .header(
            "accept",
            "application/vnd.docker.distribution.manifest.v2+json",
        )
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(&m[..], manifest.as_bytes());

    // Delete by tag keeps the image under its other tag; force-delete the repository.
    let del = c
        .batch_delete_image()
        .repository_name("sdk/app")
        .image_ids(ImageIdentifier::builder().image_tag("v1").build())
        .image_ids(ImageIdentifier::builder().image_tag("never").build())
        .send()
        .await
        .unwrap();
    assert_eq!(del.image_ids().len(), 1);
    assert_eq!(del.failures().len(), 1);
    let err = c
        .delete_repository()
        .repository_name("sdk/app")
        .send()
        .await
        .unwrap_err();
    assert!(err.into_service_error().is_repository_not_empty_exception());
    c.delete_repository()
        .repository_name("sdk/app")
        .force(true)
        .send()
        .await
        .unwrap();
    let err = c
        .describe_images()
        .repository_name("sdk/app")
        .send()
        .await
        .unwrap_err();
    assert!(err.into_service_error().is_repository_not_found_exception());
}

#[tokio::test]
async fn sdk_sees_signature_errors() {
    let s = Server::start_ecr();
    let err = client_with(&s, ROOT_KEY_ID, "wrong-secret")
        .describe_registry()
        .send()
        .await
        .unwrap_err();
    assert_eq!(
        error_code(err.into_service_error()).as_deref(),
        Some("InvalidSignatureException")
    );
    let err = client_with(&s, "AKIAUNKNOWNKEY000000", ROOT_SECRET)
        .describe_registry()
        .send()
        .await
        .unwrap_err();
    assert_eq!(
        error_code(err.into_service_error()).as_deref(),
        Some("UnrecognizedClientException")
    );
}
