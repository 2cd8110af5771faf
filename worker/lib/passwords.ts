// What registration refuses beyond the contract's 8-256 characters (docs/api.md lists it): a
// password equal to the username (case-insensitively), one of nothing but whitespace and
// control or format characters, one character repeated, and the commonest passwords of 8
// characters or more in the public breach lists (compared case-insensitively).

const COMMON = new Set([
  "password", "password1", "password12", "password123", "password!", "passw0rd", "p@ssw0rd", "p@ssword",
  "12345678", "123456789", "1234567890", "0123456789", "12341234", "12344321", "11223344", "12121212",
  "123123123", "987654321", "87654321", "11111111", "00000000", "88888888", "99999999", "66666666",
  "qwertyui", "qwertyuiop", "qwerty12", "qwerty123", "qwerty1234", "1q2w3e4r", "1q2w3e4r5t", "1qaz2wsx",
  "zaq12wsx", "qazwsxedc", "asdfghjk", "asdfghjkl", "zxcvbnm1", "abcd1234", "abc12345", "abcdefgh",
  "iloveyou", "iloveyou1", "sunshine", "princess", "football", "baseball", "basketball", "superman",
  "starwars", "trustno1", "letmein1", "letmeinnow", "welcome1", "welcome123", "whatever", "computer",
  "changeme", "admin123", "administrator", "master12", "dragon12", "monkey12", "michelle", "jennifer",
  "jordan23", "liverpool", "chelsea1", "aa123456", "a1234567", "1234qwer", "q1w2e3r4", "q1w2e3r4t5",
  "secret12", "shadow12", "charlie1", "freedom1", "internet", "samsung1", "google123", "mustang1",
]);

/** Why a new password is refused, or null. */
export function passwordProblem(password: string, username: string): string | null {
  if (/^[\s\p{Cc}\p{Cf}\p{Z}]*$/u.test(password)) return "password must not be only spaces or control characters";
  if (password.toLowerCase() === username.toLowerCase()) return "password must not be the username";
  if (new Set(password).size === 1) return "password must not be one character repeated";
  if (COMMON.has(password.toLowerCase())) return "password is too common";
  return null;
}
