//! What the kubelet asks before creating a container (pull policy IfNotPresent): ImageStatus
//! of the image, found locally with its size; ListImages holding it and the sandbox image.

use anyhow::{ensure, Context, Result};
use k8s_cri::v1::*;

use crate::cri::Suite;
use crate::images::{BUSYBOX_IMAGE, PAUSE_IMAGE};

pub async fn image_status(suite: &Suite, _handler: &str) -> Result<()> {
    let image = suite
        .images()
        .image_status(ImageStatusRequest {
            image: Some(ImageSpec {
                image: BUSYBOX_IMAGE.into(),
                ..Default::default()
            }),
            verbose: false,
        })
        .await
        .context("ImageStatus")?
        .into_inner()
        .image
        .context("the busybox image is not present")?;
    ensure!(
        image.repo_tags.iter().any(|t| t == BUSYBOX_IMAGE),
        "repo tags {:?}",
        image.repo_tags
    );
    ensure!(image.size > 0, "image size {}", image.size);
    let listed = suite
        .images()
        .list_images(ListImagesRequest { filter: None })
        .await
        .context("ListImages")?
        .into_inner()
        .images;
    for want in [BUSYBOX_IMAGE, PAUSE_IMAGE] {
        ensure!(
            listed.iter().any(|i| i.repo_tags.iter().any(|t| t == want)),
            "ListImages lacks {want}"
        );
    }
    Ok(())
}
