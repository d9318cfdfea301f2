//! The wire types: the JSON shapes of users, chats, messages, AI messages, error bodies and
//! socket frames, shared by the REST API, both sockets and the OpenAPI document.
//!
//! Shapes follow the original service's contract (`MRM Chat 2`, a Django REST Framework
//! service); fields added since are additive.

pub mod frames;
pub mod schemas;
pub mod views;
