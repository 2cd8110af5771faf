// Addressing Durable Objects by verified ids. Only the Worker calls these, after authentication.

export const conversationStub = (env: Env, conversationId: string) =>
  env.CONVERSATION.get(env.CONVERSATION.idFromName(conversationId));

export const userStub = (env: Env, userId: string) => env.USER.get(env.USER.idFromName(userId));
