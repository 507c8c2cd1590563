// Meridian's browser client: `MeridianClient` (connection, subscriptions,
// recovery) and the protocol's wire types. Pages build on this module only.
export * from "./protocol";
export * from "./client";
