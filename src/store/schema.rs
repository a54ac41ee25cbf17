// Written by hand, within the SQL types both backends share. Keep in step with
// migrations/sqlite and migrations/postgres.

diesel::table! {
    servers (id) {
        id -> BigInt,
        name -> Text,
        transport -> Text,
        command -> Nullable<Text>,
        args -> Text,
        env -> Text,
        cwd -> Nullable<Text>,
        url -> Nullable<Text>,
        headers -> Text,
        enabled -> Bool,
        probe_interval_ms -> BigInt,
        probe_timeout_ms -> Nullable<BigInt>,
        timeout_ms -> BigInt,
        cache_policy -> Text,
        cache_ttl_ms -> Nullable<BigInt>,
        tool_overrides -> Text,
        tool_prefix -> Nullable<Text>,
        source -> Text,
        revision -> BigInt,
        created_at -> Timestamp,
        updated_at -> Timestamp,
        invalidate_on_write -> Bool,
    }
}

diesel::table! {
    health_events (id) {
        id -> BigInt,
        server -> Text,
        instance -> Text,
        event -> Text,
        status -> Nullable<Text>,
        detail -> Text,
        created_at -> Timestamp,
    }
}

diesel::table! {
    tool_invocations (id) {
        id -> BigInt,
        server -> Text,
        tool -> Text,
        caller -> Nullable<Text>,
        arguments_hash -> Text,
        cached -> Bool,
        outcome -> Text,
        status -> BigInt,
        duration_us -> BigInt,
        created_at -> Timestamp,
    }
}

diesel::table! {
    api_keys (id) {
        id -> BigInt,
        name -> Text,
        role -> Text,
        secret_sha256 -> Text,
        allow -> Text,
        created_at -> Timestamp,
        revoked_at -> Nullable<Timestamp>,
        rate_limit -> Nullable<Text>,
    }
}

diesel::table! {
    mcp_sessions (id) {
        id -> Text,
        owner -> Nullable<Text>,
        initialize_params -> Text,
        log_level -> Nullable<Text>,
        created_at -> Timestamp,
        seen_at -> Timestamp,
    }
}

diesel::table! {
    mcp_session_subscriptions (session, server, uri) {
        session -> Text,
        server -> Text,
        uri -> Text,
    }
}
