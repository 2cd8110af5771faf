// A resolve hook for the bench's MLS child process (bench/lib/mls.ts): the client engine
// (web/src/e2ee/engine.ts) is written for a bundler and imports its neighbours without the `.ts`
// extension, which Node's own resolution refuses. Loaded with `node --import`.
import { registerHooks } from "node:module";

registerHooks({
  resolve(specifier, context, next) {
    try {
      return next(specifier, context);
    } catch (err) {
      if (/^\.\.?\//.test(specifier) && !/\.[cm]?[jt]s$/.test(specifier)) return next(`${specifier}.ts`, context);
      throw err;
    }
  },
});
