//! [`WebhookStore`] for [`SqlStore`] (being written).

use moltbot_core::webhooks::WebhookStore;

use crate::SqlStore;

impl WebhookStore for SqlStore {}
