//! The part of the API the two window policies share word for word.

/// Writes, for a window policy type with `limit` and `window_us` fields
/// and a `new(limit, window)` constructor, the constructors named by unit
/// (`per_second`, `per_minute`, `per_hour`) and the accessors (`limit`,
/// `window`, `window_micros`), each with its doctest.
macro_rules! window_api {
    ($policy:ident) => {
        impl $policy {
            /// `limit` per second.
            ///
            /// # Errors
            ///
            /// As [`new`](Self::new).
            ///
            /// # Examples
            ///
            /// ```
            #[doc = concat!("# use ratelimit_core::", stringify!($policy), ";")]
            #[doc = concat!("assert_eq!(", stringify!($policy), "::per_second(10).unwrap().window().as_secs(), 1);")]
            /// ```
            pub fn per_second(limit: u64) -> Result<Self, ConfigError> {
                Self::new(limit, Duration::from_secs(1))
            }

            /// `limit` per minute.
            ///
            /// # Errors
            ///
            /// As [`new`](Self::new).
            ///
            /// # Examples
            ///
            /// ```
            #[doc = concat!("# use ratelimit_core::", stringify!($policy), ";")]
            #[doc = concat!("assert_eq!(", stringify!($policy), "::per_minute(10).unwrap().window().as_secs(), 60);")]
            /// ```
            pub fn per_minute(limit: u64) -> Result<Self, ConfigError> {
                Self::new(limit, Duration::from_secs(60))
            }

            /// `limit` per hour.
            ///
            /// # Errors
            ///
            /// As [`new`](Self::new).
            ///
            /// # Examples
            ///
            /// ```
            #[doc = concat!("# use ratelimit_core::", stringify!($policy), ";")]
            #[doc = concat!("assert_eq!(", stringify!($policy), "::per_hour(10).unwrap().window().as_secs(), 3600);")]
            /// ```
            pub fn per_hour(limit: u64) -> Result<Self, ConfigError> {
                Self::new(limit, Duration::from_secs(3600))
            }

            /// The most cost per window.
            ///
            /// # Examples
            ///
            /// ```
            #[doc = concat!("# use ratelimit_core::", stringify!($policy), ";")]
            #[doc = concat!("let p = ", stringify!($policy), "::per_minute(5).unwrap();")]
            /// assert_eq!(p.limit(), 5);
            /// assert_eq!(p.window_micros(), 60_000_000);
            /// ```
            #[must_use]
            pub const fn limit(&self) -> u64 {
                self.limit
            }

            /// The window length.
            #[must_use]
            pub const fn window(&self) -> Duration {
                Duration::from_micros(self.window_us)
            }

            /// The window length in microseconds.
            #[must_use]
            pub const fn window_micros(&self) -> u64 {
                self.window_us
            }
        }
    };
}
