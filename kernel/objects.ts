// Addressing Durable Objects by verified ids. The Worker calls these only after authentication;
// the tests use them to reach an object directly.

export const conversationStub = (env: Env, conversationId: string) =>
  env.CONVERSATION.get(env.CONVERSATION.idFromName(conversationId));

export const userStub = (env: Env, userId: string) => env.USER.get(env.USER.idFromName(userId));
