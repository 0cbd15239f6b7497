// A real OpenID provider (the oidc-provider package) for inferd's single sign-on tests.
// Usage: node provider.mjs CONFIG.json (CONFIG: issuer, port, keys (a private JWKS, the first
// signs), clients, accounts (login -> claims), api_audience). Listens on 127.0.0.1 only;
// prints "ready <port>" once it listens. Its login pages are the package's development
// interactions (any password is accepted for a configured login).
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { pathToFileURL } from "node:url";

const config = JSON.parse(readFileSync(process.argv[2], "utf8"));
const moduleDir = process.env.OIDC_PROVIDER_DIR;
const { default: Provider, errors } = await import(
  pathToFileURL(join(moduleDir, "node_modules/oidc-provider/lib/index.js")).href);

// Resource servers: inferd's API (the audience its access tokens carry) and another one, to
// get tokens not meant for inferd.
const resources = {
  "urn:inferd:api": config.api_audience,
  "urn:other:api": "other-api",
};

const provider = new Provider(config.issuer, {
  clients: config.clients,
  jwks: config.keys,
  cookies: { keys: ["inferd-sso-test-cookies"] },
  conformIdTokenClaims: false, // the scopes' claims (groups) in the ID token
  scopes: ["openid", "profile", "email", "groups", "api"],
  claims: {
    openid: ["sub"],
    profile: ["name", "preferred_username"],
    email: ["email"],
    groups: ["groups"],
  },
  pkce: { required: () => true },
  features: {
    devInteractions: { enabled: true },
    resourceIndicators: {
      enabled: true,
      defaultResource: () => "urn:inferd:api",
      useGrantedResource: () => true,
      getResourceServerInfo: (ctx, indicator) => {
        if (!(indicator in resources)) throw new errors.InvalidTarget();
        return { scope: "api", audience: resources[indicator], accessTokenFormat: "jwt",
                 accessTokenTTL: 600, jwt: { sign: { alg: "RS256" } } };
      },
    },
  },
  async findAccount(ctx, id) {
    const account = config.accounts[id];
    if (!account) return undefined;
    return {
      accountId: id,
      async claims() {
        return { sub: id, preferred_username: id, name: account.name || id,
                 email: account.email, groups: account.groups || [] };
      },
    };
  },
});

const server = provider.listen(config.port, "127.0.0.1", () => {
  console.log(`ready ${server.address().port}`);
});
