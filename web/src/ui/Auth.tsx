import { useState } from "preact/hooks";
import { ApiRequestError } from "../lib/api";
import { useServices } from "./context";

export function Auth({ mode }: { mode: "login" | "register" }) {
  const { store } = useServices();
  const [username, setUsername] = useState("");
  const [password, setPassword] = useState("");
  const [displayName, setDisplayName] = useState("");
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  const register = mode === "register";

  const submit = async (e: Event) => {
    e.preventDefault();
    setBusy(true);
    setError(null);
    try {
      if (register) await store.register(username.trim(), password, displayName);
      else await store.login(username.trim(), password);
    } catch (err) {
      setError(
        err instanceof ApiRequestError
          ? err.status === 409
            ? "That username is taken."
            : err.status === 401
              ? "Wrong username or password."
              : err.status === 400
                ? "Usernames are 3-32 letters, digits or _; passwords at least 8 characters."
                : err.message
          : "Cannot reach the server. Check your connection.",
      );
    } finally {
      setBusy(false);
    }
  };

  return (
    <main class="auth">
      <form class="auth-card" onSubmit={submit} aria-labelledby="auth-title">
        <img src="/icons/icon-192.png" width={64} height={64} alt="" class="auth-logo" />
        <h1 id="auth-title">{register ? "Create your account" : "Sign in to Edge Chat"}</h1>
        <label>
          Username
          <input
            name="username"
            autocomplete="username"
            required
            minLength={register ? 3 : 1}
            maxLength={32}
            pattern={register ? "[A-Za-z0-9_]+" : undefined}
            value={username}
            onInput={(e) => setUsername(e.currentTarget.value)}
            autoFocus
          />
        </label>
        {register ? (
          <label>
            Display name <span class="optional">(optional)</span>
            <input name="displayName" autocomplete="name" maxLength={64} value={displayName} onInput={(e) => setDisplayName(e.currentTarget.value)} />
          </label>
        ) : null}
        <label>
          Password
          <input
            name="password"
            type="password"
            autocomplete={register ? "new-password" : "current-password"}
            required
            minLength={register ? 8 : 1}
            value={password}
            onInput={(e) => setPassword(e.currentTarget.value)}
          />
        </label>
        <p class="form-error" role="alert">{error ?? ""}</p>
        <button class="btn btn-primary" type="submit" disabled={busy}>
          {busy ? "Please wait…" : register ? "Create account" : "Sign in"}
        </button>
        <p class="auth-switch">
          {register ? "Have an account? " : "New here? "}
          <a
            href={register ? "/login" : "/register"}
            onClick={(e) => {
              e.preventDefault();
              setError(null);
              store.navigate({ name: register ? "login" : "register" });
            }}
          >
            {register ? "Sign in" : "Create an account"}
          </a>
        </p>
      </form>
    </main>
  );
}
