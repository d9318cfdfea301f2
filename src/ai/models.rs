//! Which models users may ask, and which provider serves each. Providers are named
//! OpenAI-compatible APIs (`MRM_AI_PROVIDERS`, and `openai` from the `OPENAI_*` variables); a
//! model's id is `provider/model`, so two providers may serve models of the same name.
//!
//! What a provider offers is its allow-list (`models`), narrowed to what its `GET /models`
//! lists when that answers, or everything it lists when it has no allow-list. Lists are cached
//! for `MRM_AI_MODELS_CACHE_SECONDS`; a provider that cannot list falls back to its
//! allow-list, and is asked again after at most 30 s. Providers are asked at once, each for at
//! most 5 s, and a list being refreshed is answered from the one before it: a slow provider
//! never holds up a request for long.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use super::{openai::OpenAiProvider, provider::ChatProvider};
use crate::config::{AiConfig, ProviderSpec, Secret};

/// How long a failed listing is remembered before the provider is asked again.
const FAILED_LISTING_TTL: Duration = Duration::from_secs(30);
/// The longest a provider is waited for to list its models.
const LISTING_TIMEOUT: Duration = Duration::from_secs(5);

/// A model a user may choose: `provider` serves it as `model`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Offered {
    pub provider: String,
    pub model: String,
    /// Its context window in tokens, when configured for its provider.
    pub context_window: Option<u32>,
}

impl Offered {
    /// The model's id: `provider/model`.
    pub fn id(&self) -> String {
        format!("{}/{}", self.provider, self.model)
    }
}

/// Where a reply is asked: a provider, the model's name there, and its id.
#[derive(Clone)]
pub struct Route {
    pub provider: Arc<dyn ChatProvider>,
    /// The provider's own name for the model, sent in requests and recorded on replies.
    pub model: String,
    /// `provider/model`.
    pub id: String,
    /// The provider's configured context window, if any.
    pub context_window: Option<u32>,
}

struct Provider {
    name: String,
    client: Arc<dyn ChatProvider>,
    allowed: Option<Vec<String>>,
    staff_only: bool,
    context_window: Option<u32>,
    /// The last listing: when it was read, and what (`None`: it failed).
    listed: tokio::sync::Mutex<Option<(Instant, Option<Vec<String>>)>>,
}

/// The configured providers and their models.
pub struct Catalog {
    providers: Vec<Provider>,
    default_model: Option<String>,
    cache: Duration,
}

impl Catalog {
    /// The providers `config` describes: `openai` from `OPENAI_API_KEY`, `OPENAI_BASE_URL` and
    /// `OPENAI_MODEL` (allowed that one model) unless `MRM_AI_PROVIDERS` names its own
    /// `openai`, then those of `MRM_AI_PROVIDERS` in order.
    pub fn from_config(config: &AiConfig) -> anyhow::Result<Self> {
        let listed = config.providers.clone().unwrap_or_default().0;
        let mut specs = Vec::new();
        if let Some(key) = &config.api_key {
            if !listed.iter().any(|p| p.name == "openai") {
                specs.push(ProviderSpec {
                    name: "openai".into(),
                    base_url: config.base_url.clone(),
                    api_key: Some(key.expose().to_owned()),
                    models: Some(vec![config.model.clone()]),
                    staff_only: false,
                    context_window: None,
                });
            }
        }
        specs.extend(listed);
        let mut providers = Vec::new();
        for spec in specs {
            let client =
                OpenAiProvider::new(&spec.base_url, spec.api_key.map(Secret::new), config)?;
            providers.push(Provider {
                name: spec.name,
                client: Arc::new(client),
                allowed: spec.models,
                staff_only: spec.staff_only,
                context_window: spec.context_window,
                listed: tokio::sync::Mutex::new(None),
            });
        }
        let default_model = config.default_model.clone().or_else(|| {
            config
                .api_key
                .as_ref()
                .map(|_| format!("openai/{}", config.model))
        });
        Ok(Self {
            providers,
            default_model,
            cache: config.models_cache,
        })
    }

    /// One provider, `name`, offering the one `model`: for other backends and tests.
    pub fn single(provider: Arc<dyn ChatProvider>, name: &str, model: &str) -> Self {
        Self {
            providers: vec![Provider {
                name: name.to_owned(),
                client: provider,
                allowed: Some(vec![model.to_owned()]),
                staff_only: false,
                context_window: None,
                listed: tokio::sync::Mutex::new(None),
            }],
            default_model: Some(format!("{name}/{model}")),
            cache: Duration::from_secs(300),
        }
    }

    /// No provider at all.
    pub fn empty() -> Self {
        Self {
            providers: Vec::new(),
            default_model: None,
            cache: Duration::from_secs(300),
        }
    }

    /// Whether any provider is configured.
    pub fn is_configured(&self) -> bool {
        !self.providers.is_empty()
    }

    async fn models_of(&self, provider: &Provider) -> Vec<String> {
        let listing = match provider.listed.try_lock() {
            // Another request is refreshing the list: answer from the one before it.
            Err(_) => None,
            Ok(mut listed) => {
                let fresh = listed.as_ref().is_some_and(|(at, list)| {
                    let ttl = if list.is_some() {
                        self.cache
                    } else {
                        self.cache.min(FAILED_LISTING_TTL)
                    };
                    at.elapsed() < ttl
                });
                if !fresh {
                    let asked =
                        tokio::time::timeout(LISTING_TIMEOUT, provider.client.list_models());
                    let answer = match asked.await {
                        Ok(Ok(models)) => Some(models),
                        Ok(Err(err)) => {
                            tracing::warn!(provider = %provider.name, error = %err, "could not list the provider's models; using its configured list");
                            None
                        }
                        Err(_) => {
                            tracing::warn!(provider = %provider.name, "the provider did not list its models in time; using its configured list");
                            None
                        }
                    };
                    *listed = Some((Instant::now(), answer));
                }
                listed.as_ref().and_then(|(_, list)| list.clone())
            }
        };
        match (&provider.allowed, listing) {
            (Some(allowed), Some(listing)) => allowed
                .iter()
                .filter(|m| listing.contains(m))
                .cloned()
                .collect(),
            (Some(allowed), None) => allowed.clone(),
            (None, Some(listing)) => listing,
            (None, None) => Vec::new(),
        }
    }

    /// The models a user (`staff` or not) may choose, provider by provider in configured order.
    pub async fn offered(&self, staff: bool) -> Vec<Offered> {
        let open: Vec<&Provider> = self
            .providers
            .iter()
            .filter(|p| staff || !p.staff_only)
            .collect();
        let lists = futures_util::future::join_all(open.iter().map(|p| self.models_of(p))).await;
        open.into_iter()
            .zip(lists)
            .flat_map(|(provider, models)| {
                models.into_iter().map(|model| Offered {
                    provider: provider.name.clone(),
                    model,
                    context_window: provider.context_window,
                })
            })
            .collect()
    }

    /// The id of the offered model `requested` names: its id (`provider/model`), or a model
    /// name, taken from the first provider offering it. `None`: not offered to this user.
    pub async fn choose(&self, requested: &str, staff: bool) -> Option<String> {
        let offered = self.offered(staff).await;
        offered
            .iter()
            .find(|m| m.id() == requested)
            .or_else(|| offered.iter().find(|m| m.model == requested))
            .map(Offered::id)
    }

    /// The model of AI chats created without one: `MRM_AI_DEFAULT_MODEL` (its id, or a model
    /// name in a provider's allow-list), else `openai/OPENAI_MODEL`, when open to the user;
    /// else the first model offered to them. Only the last asks providers for their lists.
    pub async fn default_model(&self, staff: bool) -> Option<String> {
        if let Some(model) = &self.default_model {
            if self.route(model, staff).is_some() {
                return Some(model.clone());
            }
            let allowed = self.providers.iter().find(|p| {
                (staff || !p.staff_only) && p.allowed.as_ref().is_some_and(|a| a.contains(model))
            });
            if let Some(provider) = allowed {
                return Some(format!("{}/{model}", provider.name));
            }
            if let Some(id) = self.choose(model, staff).await {
                return Some(id);
            }
        }
        self.offered(staff).await.first().map(Offered::id)
    }

    fn split<'a>(&self, id: &'a str) -> Option<(&Provider, &'a str)> {
        let (name, model) = id.split_once('/')?;
        let provider = self.providers.iter().find(|p| p.name == name)?;
        (!model.is_empty()).then_some((provider, model))
    }

    /// Where to ask model `id` for a user (`staff` or not): its provider, if configured and
    /// open to the user, and the model, if the provider's allow-list (when it has one) holds it.
    /// The provider's listing is not consulted: a model it stops listing fails when asked.
    pub fn route(&self, id: &str, staff: bool) -> Option<Route> {
        let (provider, model) = self.split(id)?;
        if provider.staff_only && !staff {
            return None;
        }
        if let Some(allowed) = &provider.allowed {
            if !allowed.iter().any(|m| m == model) {
                return None;
            }
        }
        Some(Route {
            provider: provider.client.clone(),
            model: model.to_owned(),
            id: id.to_owned(),
            context_window: provider.context_window,
        })
    }
}
