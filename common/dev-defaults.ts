/**
 * Values of the development stack (`npm run up`, compose, tests). The gateway refuses them
 * when `NODE_ENV=production`.
 */
export const devJwtSecret = "dev-only-jwt-secret-do-not-use-in-production-0123456789";

/** The development user (SPEC 4.1). */
export const devUser = { username: "TestUser", password: "TestPassword", role: "admin" } as const;
