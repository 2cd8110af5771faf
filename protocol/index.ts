export * from "./schemas";
export * from "./errors";
export * from "./version";
export * from "./mediaSchemas";
export * from "./mls";
