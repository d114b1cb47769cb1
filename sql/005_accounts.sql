-- Many accounts in one deployment: the registry of accounts beyond the environment's own
-- (KOMMO_SUBDOMAIN, KOMMO_TOKEN, ... stay as they are and need no row here), and consumer
-- tokens scoped to accounts.
--
-- Every credential is stored sealed: 'fernet:' + a Fernet token made with SECRETS_KEY
-- (service/accounts/secrets.py), never in clear. Secrets found by lookup (a webhook secret in a
-- URL, a consumer token) are also kept as SHA-256 hex digests.

CREATE TABLE accounts (
    id                          bigint      PRIMARY KEY,
    subdomain                   text        NOT NULL UNIQUE,
    base_url                    text        NOT NULL UNIQUE,
    state                       text        NOT NULL DEFAULT 'enabled'
                                CHECK (state IN ('enabled', 'disabled', 'uninstalled')),
    state_reason                text,
    state_changed_at            timestamptz NOT NULL DEFAULT now(),
    rate_limit                  real        NOT NULL DEFAULT 6
                                CHECK (rate_limit > 0 AND rate_limit <= 50),
    auth                        text        NOT NULL CHECK (auth IN ('token', 'oauth')),
    token_sealed                text,
    token_expires_at            timestamptz,
    oauth_client_id             text,
    oauth_client_secret_sealed  text,
    oauth_redirect_uri          text,
    access_token_sealed         text,
    refresh_token_sealed        text,
    access_expires_at           timestamptz,
    webhook_secret_hash         text        NOT NULL UNIQUE,
    webhook_secret_sealed       text        NOT NULL,
    created_at                  timestamptz NOT NULL DEFAULT now(),
    updated_at                  timestamptz NOT NULL DEFAULT now(),
    CHECK (auth <> 'token' OR token_sealed IS NOT NULL),
    CHECK (auth <> 'oauth' OR (access_token_sealed IS NOT NULL
                               AND refresh_token_sealed IS NOT NULL
                               AND access_expires_at IS NOT NULL)),
    CHECK ((oauth_client_id IS NULL) = (oauth_client_secret_sealed IS NULL)
           AND (oauth_client_id IS NULL) = (oauth_redirect_uri IS NULL)),
    CHECK (subdomain ~ '^[a-z0-9-]+$'),
    CHECK (webhook_secret_hash ~ '^[0-9a-f]{64}$')
);
COMMENT ON TABLE accounts IS
    'Kommo accounts this deployment mirrors besides the environment''s own (kommo-sync accounts)';
COMMENT ON COLUMN accounts.id IS 'Kommo account id (GET /api/v4/account), checked at registration';
COMMENT ON COLUMN accounts.subdomain IS 'Kommo subdomain, lower case; how commands name the account';
COMMENT ON COLUMN accounts.base_url IS 'API base URL (https://{subdomain}.kommo.com, amoCRM, a proxy)';
COMMENT ON COLUMN accounts.state IS
    'enabled (synced), disabled (by an operator) or uninstalled (Kommo''s uninstall hook)';
COMMENT ON COLUMN accounts.state_reason IS 'why the state last changed, for operators';
COMMENT ON COLUMN accounts.state_changed_at IS 'when the state last changed';
COMMENT ON COLUMN accounts.rate_limit IS 'Kommo requests per second for this account (default 6)';
COMMENT ON COLUMN accounts.auth IS
    'credential kind: token (a long-lived token) or oauth (an OAuth 2.0 pair)';
COMMENT ON COLUMN accounts.token_sealed IS 'the long-lived token, sealed with SECRETS_KEY';
COMMENT ON COLUMN accounts.token_expires_at IS
    'exp of the long-lived token (a JWT claim), null when it carries none';
COMMENT ON COLUMN accounts.oauth_client_id IS
    'the account''s own OAuth integration; null: the deployment''s (KOMMO_CLIENT_ID)';
COMMENT ON COLUMN accounts.oauth_client_secret_sealed IS
    'that integration''s client secret, sealed; null with oauth_client_id';
COMMENT ON COLUMN accounts.oauth_redirect_uri IS
    'that integration''s redirect URI; null with oauth_client_id';
COMMENT ON COLUMN accounts.access_token_sealed IS 'OAuth access token, sealed';
COMMENT ON COLUMN accounts.refresh_token_sealed IS
    'OAuth refresh token (single-use, rotates on every refresh), sealed';
COMMENT ON COLUMN accounts.access_expires_at IS 'when the OAuth access token expires';
COMMENT ON COLUMN accounts.webhook_secret_hash IS
    'SHA-256 hex of the account''s webhook secret: POST /webhooks/kommo/{secret} routes by it';
COMMENT ON COLUMN accounts.webhook_secret_sealed IS
    'the webhook secret itself, sealed, so that accounts webhook-url can print the URL again';
COMMENT ON COLUMN accounts.created_at IS 'when the account was registered';
COMMENT ON COLUMN accounts.updated_at IS 'when the row last changed (state, credential, key)';

CREATE TABLE consumer_tokens (
    token_hash  text        NOT NULL CHECK (token_hash ~ '^[0-9a-f]{64}$'),
    account_id  bigint      NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (token_hash, account_id)
);
CREATE INDEX consumer_tokens_account ON consumer_tokens (account_id);
COMMENT ON TABLE consumer_tokens IS
    'consumer tokens that see only some accounts (kommo-sync accounts token); WS_TOKENS see all';
COMMENT ON COLUMN consumer_tokens.token_hash IS
    'SHA-256 hex of the token (the token itself is printed once and never stored)';
COMMENT ON COLUMN consumer_tokens.account_id IS 'an account the token may see (one row each)';
COMMENT ON COLUMN consumer_tokens.created_at IS 'when the token was issued';
