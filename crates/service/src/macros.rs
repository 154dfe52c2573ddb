//! [`service!`](crate::service): a service's methods without a proc-macro.

/// Defines a service: a marker type per method, implementing
/// [`Method`](crate::Method), and a marker type for the service listing
/// their names.
///
/// Each method is `Marker = "name.vN": RequestType => ResponseType;`,
/// optionally followed by `, nested(Enum, ...)` naming enums nested in the
/// types, which the [`fingerprint`](crate::fingerprint) should trace in
/// full (see [`Method::trace_nested`](crate::Method::trace_nested)).
/// Attributes and doc comments go on the markers; the service's visibility
/// applies to every marker.
///
/// # Examples
///
/// ```
/// use netproto_service::{Method, fingerprint, service};
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Serialize, Deserialize)]
/// pub struct Put {
///     pub key: String,
///     pub value: Vec<u8>,
///     pub mode: Mode,
/// }
///
/// #[derive(Serialize, Deserialize)]
/// pub enum Mode {
///     Upsert,
///     IfAbsent,
///     IfVersion(u64),
/// }
///
/// service! {
///     /// A key-value store.
///     pub service Kv {
///         /// Reads a key.
///         Get = "kv.get.v1": String => Option<Vec<u8>>;
///         /// Writes a key; answers whether it was written.
///         PutKey = "kv.put.v1": Put => bool, nested(Mode);
///     }
/// }
///
/// assert_eq!(Kv::METHODS, ["kv.get.v1", "kv.put.v1"]);
/// assert_eq!(<Get as Method>::NAME, "kv.get.v1");
/// assert_ne!(fingerprint::<Get>(), fingerprint::<PutKey>());
/// ```
#[macro_export]
macro_rules! service {
    (
        $(#[$service_meta:meta])*
        $vis:vis service $service:ident {
            $(
                $(#[$method_meta:meta])*
                $method:ident = $name:literal : $request:ty => $response:ty
                    $(, nested($($nested:ty),+ $(,)?))? ;
            )*
        }
    ) => {
        $(#[$service_meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
        // Generated whether or not the program names it.
        #[allow(dead_code)]
        $vis struct $service;

        #[allow(dead_code)]
        impl $service {
            /// The names of the service's methods, in the order defined.
            $vis const METHODS: &'static [&'static str] = &[$($name),*];
        }

        $(
            $(#[$method_meta])*
            #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
            $vis struct $method;

            impl $crate::Method for $method {
                const NAME: &'static str = $name;
                type Request = $request;
                type Response = $response;

                $(
                    fn trace_nested(
                        tracer: &mut $crate::serde_reflection::Tracer,
                    ) -> ::core::result::Result<(), $crate::serde_reflection::Error> {
                        $(tracer.trace_simple_type::<$nested>()?;)+
                        ::core::result::Result::Ok(())
                    }
                )?
            }
        )*
    };
}
