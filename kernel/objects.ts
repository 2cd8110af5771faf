// Addressing Durable Objects by verified ids. The Worker calls these only after authentication;
// the tests use them to reach an object directly.

export const conversationStub = (env: Env, conversationId: string) =>
  env.CONVERSATION.get(env.CONVERSATION.idFromName(conversationId));

export const userStub = (env: Env, userId: string) => env.USER.get(env.USER.idFromName(userId));

/** The throttle object of one key (worker/lib/throttle.ts names them). */
export const throttleStub = (env: Env, key: string) => env.THROTTLE.get(env.THROTTLE.idFromName(key));
