//! Canonical endpoint keys (docs/licenses.md): which instances are one endpoint app.

use crate::config::{Connector, Instance};

/// The canonical endpoint key of an instance, or `None` for webhooks, which are never endpoints.
///
/// Keys are lowercased, so hosts, apps, engines and URIs compare case-insensitively.
pub fn canonical_endpoint(instance: &Instance) -> Option<String> {
    let attr = |value: &Option<String>| value.as_deref().unwrap_or("").trim().to_lowercase();
    let key = match instance.connector {
        Connector::Named => format!("app:{}", attr(&instance.app)),
        Connector::Http | Connector::Rest | Connector::Graphql => {
            format!("http:{}", attr(&instance.base_uri))
        }
        Connector::Rdbms => format!("rdbms:{}:{}", attr(&instance.engine), attr(&instance.host)),
        Connector::Snowflake => format!("snowflake:{}", attr(&instance.account)),
        Connector::Bigquery => format!("bigquery:{}", attr(&instance.client_email)),
        Connector::Redshift => format!(
            "redshift:{}:{}",
            attr(&instance.cluster),
            attr(&instance.region)
        ),
        Connector::Dynamodb => format!("dynamodb:{}", attr(&instance.access_key_id)),
        Connector::Ftp | Connector::Sftp | Connector::Ftps => {
            format!("ftp:{}:{}", attr(&instance.host), port_or_default(instance))
        }
        Connector::As2 => format!("as2:{}:{}", attr(&instance.host), port_or_default(instance)),
        Connector::Wrapper => format!("wrapper:{}", instance.id.to_lowercase()),
        Connector::Webhook => return None,
    };
    Some(key)
}

/// The server a trading partner is tallied by (its lowercased host, whatever the port), if it is one.
pub fn trading_partner_host(instance: &Instance) -> Option<String> {
    let host = instance.host.as_deref()?.trim();
    (instance.trading_partner && !host.is_empty()).then(|| host.to_lowercase())
}

/// The instance's port, or its connector's well-known default.
fn port_or_default(instance: &Instance) -> u16 {
    instance.port.unwrap_or(match instance.connector {
        Connector::Sftp => 22,
        Connector::Ftps => 990,
        Connector::As2 => 443,
        _ => 21,
    })
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;
    use crate::catalog::testing::instance;

    fn s(v: &str) -> Option<String> {
        Some(v.to_owned())
    }

    fn named(id: &str, app: &str) -> Instance {
        Instance {
            app: s(app),
            ..instance(id, Connector::Named)
        }
    }
    fn http(id: &str, uri: &str) -> Instance {
        Instance {
            base_uri: s(uri),
            ..instance(id, Connector::Http)
        }
    }
    fn rdbms(id: &str, engine: &str, host: &str) -> Instance {
        Instance {
            engine: s(engine),
            host: s(host),
            ..instance(id, Connector::Rdbms)
        }
    }
    fn ftp(id: &str, connector: Connector, host: &str, port: Option<u16>) -> Instance {
        Instance {
            host: s(host),
            port,
            ..instance(id, connector)
        }
    }

    /// How many endpoint apps a set of instances is.
    fn count(instances: &[Instance]) -> usize {
        instances
            .iter()
            .filter_map(canonical_endpoint)
            .collect::<HashSet<_>>()
            .len()
    }

    #[test]
    fn every_rule_yields_its_key() {
        let cases: Vec<(Instance, Option<&str>)> = vec![
            (named("a", "NetSuite"), Some("app:netsuite")),
            (
                http("b", "https://My-App-Host.com/API/"),
                Some("http:https://my-app-host.com/api/"),
            ),
            (
                Instance {
                    base_uri: s("https://h.com/graphql"),
                    ..instance("c", Connector::Graphql)
                },
                Some("http:https://h.com/graphql"),
            ),
            (
                Instance {
                    base_uri: s("https://h.com/rest"),
                    ..instance("c2", Connector::Rest)
                },
                Some("http:https://h.com/rest"),
            ),
            (
                rdbms("d", "MySQL", "MySQL.yoursql.io"),
                Some("rdbms:mysql:mysql.yoursql.io"),
            ),
            (
                Instance {
                    account: s("ACME-EU"),
                    ..instance("e", Connector::Snowflake)
                },
                Some("snowflake:acme-eu"),
            ),
            (
                Instance {
                    client_email: s("Loader@P.iam.gserviceaccount.com"),
                    ..instance("f", Connector::Bigquery)
                },
                Some("bigquery:loader@p.iam.gserviceaccount.com"),
            ),
            (
                Instance {
                    cluster: s("c1"),
                    region: s("eu-west-1"),
                    ..instance("g", Connector::Redshift)
                },
                Some("redshift:c1:eu-west-1"),
            ),
            (
                Instance {
                    access_key_id: s("AKIA1"),
                    ..instance("h", Connector::Dynamodb)
                },
                Some("dynamodb:akia1"),
            ),
            (
                ftp("i", Connector::Ftp, "ftp.x.net", None),
                Some("ftp:ftp.x.net:21"),
            ),
            (
                ftp("j", Connector::Sftp, "ftp.x.net", None),
                Some("ftp:ftp.x.net:22"),
            ),
            (
                ftp("k", Connector::Ftps, "ftp.x.net", None),
                Some("ftp:ftp.x.net:990"),
            ),
            (
                ftp("l", Connector::Ftp, "ftp.x.net", Some(2121)),
                Some("ftp:ftp.x.net:2121"),
            ),
            (
                ftp("m", Connector::As2, "as2.x.net", None),
                Some("as2:as2.x.net:443"),
            ),
            (
                ftp("n", Connector::As2, "as2.x.net", Some(4080)),
                Some("as2:as2.x.net:4080"),
            ),
            (
                instance("Wrap-1", Connector::Wrapper),
                Some("wrapper:wrap-1"),
            ),
            (instance("hook", Connector::Webhook), None),
        ];
        for (instance, expected) in cases {
            assert_eq!(
                canonical_endpoint(&instance).as_deref(),
                expected,
                "instance {}",
                instance.id
            );
        }
    }

    #[test]
    fn worked_cases_count_endpoint_apps() {
        let cases: Vec<(&str, Vec<Instance>, usize)> = vec![
            (
                "two NetSuite connections",
                vec![named("ns1", "netsuite"), named("ns2", "netsuite")],
                1,
            ),
            (
                "NetSuite + NetSuite JDBC",
                vec![named("ns", "netsuite"), named("jdbc", "netsuite-jdbc")],
                2,
            ),
            (
                "NetSuite accounts 113156 and 668910",
                vec![
                    named("ns-113156", "netsuite"),
                    named("ns-668910", "NetSuite"),
                ],
                1,
            ),
            (
                "Acumatica basic auth + OAuth 2.0",
                vec![
                    named("acu-basic", "acumatica"),
                    named("acu-oauth", "acumatica"),
                ],
                1,
            ),
            (
                "three Shopify stores",
                vec![
                    named("s1", "shopify"),
                    named("s2", "shopify"),
                    named("s3", "Shopify"),
                ],
                1,
            ),
            (
                "two MySQL on mysql.yoursql.io",
                vec![
                    rdbms("m1", "mysql", "mysql.yoursql.io"),
                    rdbms("m2", "mysql", "mysql.yoursql.io"),
                ],
                1,
            ),
            (
                "mysql1 + mysql2 hosts",
                vec![
                    rdbms("m1", "mysql", "mysql1.yoursql.io"),
                    rdbms("m2", "mysql", "mysql2.yoursql.io"),
                ],
                2,
            ),
            (
                "two Snowflake connections to one account",
                vec![
                    Instance {
                        account: s("acme"),
                        ..instance("sf1", Connector::Snowflake)
                    },
                    Instance {
                        account: s("ACME"),
                        ..instance("sf2", Connector::Snowflake)
                    },
                ],
                1,
            ),
            (
                "Snowflake, two accounts",
                vec![
                    Instance {
                        account: s("acme"),
                        ..instance("sf1", Connector::Snowflake)
                    },
                    Instance {
                        account: s("globex"),
                        ..instance("sf2", Connector::Snowflake)
                    },
                ],
                2,
            ),
            (
                "Redshift same cluster and region",
                vec![
                    Instance {
                        cluster: s("dw"),
                        region: s("us-east-1"),
                        ..instance("r1", Connector::Redshift)
                    },
                    Instance {
                        cluster: s("dw"),
                        region: s("us-east-1"),
                        ..instance("r2", Connector::Redshift)
                    },
                ],
                1,
            ),
            (
                "Redshift different region",
                vec![
                    Instance {
                        cluster: s("dw"),
                        region: s("us-east-1"),
                        ..instance("r1", Connector::Redshift)
                    },
                    Instance {
                        cluster: s("dw"),
                        region: s("eu-west-1"),
                        ..instance("r2", Connector::Redshift)
                    },
                ],
                2,
            ),
            (
                "DynamoDB same access key id",
                vec![
                    Instance {
                        access_key_id: s("AKIA1"),
                        ..instance("d1", Connector::Dynamodb)
                    },
                    Instance {
                        access_key_id: s("AKIA1"),
                        ..instance("d2", Connector::Dynamodb)
                    },
                ],
                1,
            ),
            (
                "DynamoDB different access key ids",
                vec![
                    Instance {
                        access_key_id: s("AKIA1"),
                        ..instance("d1", Connector::Dynamodb)
                    },
                    Instance {
                        access_key_id: s("AKIA2"),
                        ..instance("d2", Connector::Dynamodb)
                    },
                ],
                2,
            ),
            (
                "HTTP base URI with basic auth + three OAuth 2.0",
                vec![
                    http("basic", "https://my-app-host.com"),
                    http("oauth1", "https://my-app-host.com"),
                    http("oauth2", "https://my-app-host.com"),
                    http("oauth3", "https://MY-APP-HOST.com"),
                ],
                1,
            ),
            (
                "HTTP path vs subdomain",
                vec![
                    http("a", "https://my-app-host.com/api/"),
                    http("b", "https://api.my-app-host.com/"),
                ],
                2,
            ),
            (
                "HTTP /api/ vs /api/v3",
                vec![
                    http("a", "https://h.com/api/"),
                    http("b", "https://h.com/api/v3"),
                ],
                2,
            ),
            (
                "universal HTTP to FieldAware + named FieldAware",
                vec![
                    http("u", "https://api.fieldaware.net"),
                    named("n", "fieldaware"),
                ],
                2,
            ),
            (
                "two FTP to one host on port 21",
                vec![
                    ftp("f1", Connector::Ftp, "ftp.my-app-host.net", Some(21)),
                    ftp("f2", Connector::Ftp, "FTP.my-app-host.net", None),
                ],
                1,
            ),
            (
                "FTP ports 21 and 2121",
                vec![
                    ftp("f1", Connector::Ftp, "ftp.my-app-host.net", Some(21)),
                    ftp("f2", Connector::Ftp, "ftp.my-app-host.net", Some(2121)),
                ],
                2,
            ),
            (
                "a wrapper each",
                vec![
                    instance("w1", Connector::Wrapper),
                    instance("w2", Connector::Wrapper),
                ],
                2,
            ),
            ("one wrapper", vec![instance("w1", Connector::Wrapper)], 1),
            (
                "webhooks",
                vec![
                    instance("h1", Connector::Webhook),
                    instance("h2", Connector::Webhook),
                ],
                0,
            ),
            (
                "hosts compare case-insensitively",
                vec![
                    rdbms("m1", "MySQL", "DB.Example.com"),
                    rdbms("m2", "mysql", "db.example.com"),
                ],
                1,
            ),
        ];
        for (name, instances, expected) in cases {
            assert_eq!(count(&instances), expected, "{name}");
        }
    }

    #[test]
    fn trading_partners_are_tallied_by_host_whatever_the_port() {
        let a = Instance {
            trading_partner: true,
            ..ftp("a", Connector::Sftp, "Partner.example", Some(22))
        };
        let b = Instance {
            trading_partner: true,
            ..ftp("b", Connector::Ftp, "partner.example", Some(2121))
        };
        let c = ftp("c", Connector::Ftp, "partner.example", None);
        assert_eq!(trading_partner_host(&a).as_deref(), Some("partner.example"));
        assert_eq!(trading_partner_host(&a), trading_partner_host(&b));
        assert_eq!(trading_partner_host(&c), None);
    }
}
