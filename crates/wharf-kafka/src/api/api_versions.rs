//! ApiVersions: exactly the table in `versions`.

use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::ApiVersionsResponse;
use kafka_protocol::ResponseError;

use crate::versions::{supported, SUPPORTED_APIS};

pub fn handle(version: i16) -> ApiVersionsResponse {
    let api_keys = SUPPORTED_APIS
        .iter()
        .filter_map(|(key, _, _)| {
            let (min, max) = supported(*key)?;
            Some(
                ApiVersion::default()
                    .with_api_key(*key as i16)
                    .with_min_version(min)
                    .with_max_version(max),
            )
        })
        .collect();
    let known = supported(kafka_protocol::messages::ApiKey::ApiVersions)
        .is_some_and(|(min, max)| (min..=max).contains(&version));
    let error_code = if known {
        0
    } else {
        ResponseError::UnsupportedVersion.code()
    };
    ApiVersionsResponse::default()
        .with_error_code(error_code)
        .with_api_keys(api_keys)
}
