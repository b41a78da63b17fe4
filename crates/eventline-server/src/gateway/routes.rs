//! The REST route table, read from the `google.api.http` annotations in the descriptor
//! set (never a hand-kept list), and path-template matching.

use http::Method;
use prost_reflect::{DescriptorPool, DynamicMessage, MethodDescriptor, ReflectMessage, Value};

/// What part of the request message the HTTP body fills.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum BodyTarget {
    /// No body (GET).
    None,
    /// `body: "*"`: the whole request message.
    Whole,
    /// `body: "field"`: one field of the request message.
    Field(String),
}

/// One segment of a path template: `events`, `{user_id}`, or `{key_id}:revoke`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Segment {
    Literal(String),
    Variable { field: String, suffix: String },
}

/// One REST binding of an RPC.
#[derive(Debug, Clone)]
pub(crate) struct Route {
    pub(crate) method: Method,
    pub(crate) template: String,
    pub(crate) segments: Vec<Segment>,
    pub(crate) body: BodyTarget,
    pub(crate) rpc: MethodDescriptor,
}

impl Route {
    /// The gRPC path of the RPC, `/eventline.v1.IngestService/Track`.
    pub(crate) fn grpc_path(&self) -> String {
        format!(
            "/{}/{}",
            self.rpc.parent_service().full_name(),
            self.rpc.name()
        )
    }

    /// Matches a request path, returning the path variables.
    pub(crate) fn matches(&self, path: &str) -> Option<Vec<(String, String)>> {
        let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        if parts.len() != self.segments.len() {
            return None;
        }
        let mut variables = Vec::new();
        for (segment, part) in self.segments.iter().zip(parts) {
            match segment {
                Segment::Literal(literal) => {
                    if literal != part {
                        return None;
                    }
                }
                Segment::Variable { field, suffix } => {
                    let value = part.strip_suffix(suffix.as_str())?;
                    if value.is_empty() {
                        return None;
                    }
                    let decoded = percent_encoding::percent_decode_str(value)
                        .decode_utf8()
                        .ok()?;
                    variables.push((field.clone(), decoded.into_owned()));
                }
            }
        }
        Some(variables)
    }

    /// Whether the HTTP body must be present: it fills fields the path does not.
    pub(crate) fn body_required(&self) -> bool {
        let path_fields: Vec<&str> = self
            .segments
            .iter()
            .filter_map(|segment| match segment {
                Segment::Variable { field, .. } => Some(field.as_str()),
                Segment::Literal(_) => None,
            })
            .collect();
        match &self.body {
            BodyTarget::None => false,
            BodyTarget::Field(_) => true,
            BodyTarget::Whole => self
                .rpc
                .input()
                .fields()
                .any(|field| !path_fields.contains(&field.name())),
        }
    }

    fn variable_count(&self) -> usize {
        self.segments
            .iter()
            .filter(|segment| matches!(segment, Segment::Variable { .. }))
            .count()
    }
}

/// Every REST route of every service in `pool`, literal paths first.
pub(crate) fn route_table(pool: &DescriptorPool) -> Result<Vec<Route>, String> {
    let http_rule = pool
        .get_extension_by_name("google.api.http")
        .ok_or("the descriptor set lacks google.api.http")?;
    let mut routes = Vec::new();
    for service in pool.services() {
        for rpc in service.methods() {
            let options = rpc.options();
            if !options.has_extension(&http_rule) {
                continue;
            }
            let rule = options.get_extension(&http_rule);
            let Some(rule) = rule.as_message() else {
                continue;
            };
            routes.push(route_from_rule(rule, rpc.clone())?);
            if let Some(Value::List(bindings)) = rule
                .get_field_by_name("additional_bindings")
                .map(|value| value.into_owned())
            {
                for binding in bindings {
                    if let Some(binding) = binding.as_message() {
                        routes.push(route_from_rule(binding, rpc.clone())?);
                    }
                }
            }
        }
    }
    routes.sort_by_key(Route::variable_count);
    Ok(routes)
}

fn route_from_rule(rule: &DynamicMessage, rpc: MethodDescriptor) -> Result<Route, String> {
    let descriptor = rule.descriptor();
    let mut binding = None;
    for verb in ["get", "put", "post", "delete", "patch"] {
        // Unset oneof members read back as "": check presence first.
        if descriptor
            .get_field_by_name(verb)
            .is_some_and(|field| rule.has_field(&field))
        {
            let template = rule
                .get_field_by_name(verb)
                .and_then(|value| value.as_str().map(str::to_owned));
            let method = Method::from_bytes(verb.to_ascii_uppercase().as_bytes())
                .map_err(|error| error.to_string())?;
            binding = template.map(|template| (method, template));
        }
    }
    let (method, template) =
        binding.ok_or_else(|| format!("{} has an http rule without a verb", rpc.full_name()))?;
    let body = match rule
        .get_field_by_name("body")
        .and_then(|value| value.as_str().map(str::to_owned))
        .unwrap_or_default()
    {
        body if body.is_empty() => BodyTarget::None,
        body if body == "*" => BodyTarget::Whole,
        field => BodyTarget::Field(field),
    };
    let segments = template
        .trim_start_matches('/')
        .split('/')
        .map(|segment| {
            match segment
                .strip_prefix('{')
                .and_then(|rest| rest.split_once('}'))
            {
                Some((field, suffix)) => Segment::Variable {
                    field: field.to_owned(),
                    suffix: suffix.to_owned(),
                },
                None => Segment::Literal(segment.to_owned()),
            }
        })
        .collect();
    Ok(Route {
        method,
        template,
        segments,
        body,
        rpc,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> Vec<Route> {
        let pool = DescriptorPool::decode(eventline_proto::FILE_DESCRIPTOR_SET).unwrap();
        route_table(&pool).unwrap()
    }

    fn find<'a>(
        routes: &'a [Route],
        method: Method,
        path: &str,
    ) -> Option<(&'a Route, Vec<(String, String)>)> {
        routes
            .iter()
            .filter(|route| route.method == method)
            .find_map(|route| route.matches(path).map(|vars| (route, vars)))
    }

    #[test]
    fn every_annotated_rpc_has_a_route_and_every_route_an_rpc() {
        let pool = DescriptorPool::decode(eventline_proto::FILE_DESCRIPTOR_SET).unwrap();
        let routes = route_table(&pool).unwrap();
        for service in pool
            .services()
            .filter(|service| service.package_name() == "eventline.v1")
        {
            for rpc in service.methods() {
                let routed = routes
                    .iter()
                    .any(|route| route.rpc.full_name() == rpc.full_name());
                // Client-streaming RPCs have no REST form (README "The API": gRPC only).
                assert_eq!(routed, !rpc.is_client_streaming(), "{}", rpc.full_name());
            }
        }
        for route in &routes {
            assert!(
                pool.get_service_by_name(route.rpc.parent_service().full_name())
                    .is_some()
            );
        }
        assert_eq!(
            routes.len(),
            40,
            "3 ingest + 9 query (+1 user binding) + 27 admin"
        );
    }

    #[test]
    fn templates_match_with_variables_and_custom_verbs() {
        let routes = table();
        let (route, _) = find(&routes, Method::POST, "/v1/events:batch").unwrap();
        assert_eq!(route.rpc.name(), "IngestBatch");
        assert_eq!(route.body, BodyTarget::Whole);
        let (route, vars) = find(&routes, Method::GET, "/v1/users/u%201/events").unwrap();
        assert_eq!(route.rpc.name(), "ListEvents");
        assert_eq!(vars, [("user_id".to_owned(), "u 1".to_owned())]);
        let (route, vars) = find(&routes, Method::POST, "/v1/keys/key_1:revoke").unwrap();
        assert_eq!(route.rpc.name(), "RevokeApiKey");
        assert_eq!(vars, [("key_id".to_owned(), "key_1".to_owned())]);
        let (route, _) = find(&routes, Method::POST, "/v1/events").unwrap();
        assert_eq!(route.body, BodyTarget::Field("event".into()));
        assert!(find(&routes, Method::GET, "/v1/nothing").is_none());
        assert!(find(&routes, Method::DELETE, "/v1/events").is_none());
    }
}
