export * from "./schemas";
export * from "./errors";
export * from "./version";
export * from "./mediaSchemas";
export { INVISIBLE_IN_NAMES } from "./text";
export * from "./mls";
export * from "./actions";
export * from "./conversationSettings";
