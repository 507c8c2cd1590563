//! The replaced system's browser protocol (placeholder until written).
use super::hub::Hub;
use super::Edge;
use axum::extract::ws::WebSocket;
use meridian_config::Config;
use std::sync::Arc;

pub struct LoveSettings;

impl LoveSettings {
    pub fn from_config(_config: &Config) -> LoveSettings {
        LoveSettings
    }
}

pub async fn serve(
    _socket: WebSocket,
    _token: Option<String>,
    _password: Option<String>,
    _hub: Hub,
    _settings: Arc<LoveSettings>,
    _edge: Edge,
) {
}
